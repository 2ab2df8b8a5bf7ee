"""Reference Fréchet distances (numpy + scipy, as pytorch-fid computes them) for the Rust test
of `vqrae_tokenizer::frechet` (tokenizer/tests/frechet.rs).

Writes tokenizer/tests/fixtures/frechet/expected.json: for each case, the recipe of two
deterministic feature sets and the distance between them. The features themselves are not
stored: both sides draw them from the same integer generator (splitmix64, 53-bit uniforms,
only + - * / and sqrt, each correctly rounded in IEEE 754, so Rust and Python get the same
float32 values); each set's float64 sum is stored too, so a generator that drifts fails the
test before any distance is compared.

The distance is pytorch-fid's `calculate_frechet_distance`: means and unbiased covariances
(`np.cov(rowvar=False)`, divisor n - 1) of the float32 features taken in float64,
`|mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr(sqrtm(S_a S_b))` with `scipy.linalg.sqrtm` (the
real part; on a non-finite result, 1e-6 added to both diagonals, as pytorch-fid does). The
symmetric form the Rust code uses (eigenvalues of sqrt(S_a) S_b sqrt(S_a)) is written beside it
as `fd_eigh`, so the fixture shows the two agree on its cases.

Made with Python 3.11.7, numpy 2.4.6, scipy 1.17.1:

    python3 -m venv /tmp/fdref && /tmp/fdref/bin/pip install numpy==2.4.6 scipy==1.17.1
    /tmp/fdref/bin/python scripts/make_frechet_fixtures.py [--out tokenizer/tests/fixtures/frechet]
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import scipy
from scipy import linalg

MASK = (1 << 64) - 1


def uniforms(seed, count):
    """`count` splitmix64 draws from `seed`, as floats in [0, 1) from their top 53 bits."""
    state = seed & MASK
    out = np.empty(count, dtype=np.float64)
    for i in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        out[i] = float(z >> 11) * (1.0 / (1 << 53))
    return out


def features(spec):
    """An `n x d` float32 set: unit-variance uniform noise `w`, mixed with its right neighbour
    (`mix`), scaled per column (`1 + scale * (j % 5) / 4`) and shifted (`shift * ((j % 7) - 3) / 3`).
    The operations and their order are those of `set_from_spec` in the Rust test."""
    n, d = spec["n"], spec["d"]
    u = uniforms(spec["seed"], n * d).reshape(n, d)
    w = (u - 0.5) * (2.0 * math.sqrt(3.0))
    j = np.arange(d)
    mean = spec["shift"] * ((j % 7).astype(np.float64) - 3.0) / 3.0
    scale = 1.0 + spec["scale"] * (j % 5).astype(np.float64) / 4.0
    mixed = w + spec["mix"] * w[:, (j + 1) % d]
    return (mean + scale * mixed).astype(np.float32)


def stats(x):
    x = x.astype(np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def fd_sqrtm(mu1, s1, mu2, s2, eps=1e-6):
    """pytorch-fid's `calculate_frechet_distance`."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fd_eigh(mu1, s1, mu2, s2):
    """The symmetric form: Tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))."""
    lam, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(lam, 0, None))) @ v.T
    m = root @ s2 @ root
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    diff = mu1 - mu2
    tr = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr)


def spec(n, d, seed, shift=0.0, scale=0.0, mix=0.0):
    return {"n": n, "d": d, "seed": seed, "shift": shift, "scale": scale, "mix": mix}


CASES = {
    # well conditioned: n >> d, different means and covariances
    "separated_500x64": (spec(500, 64, 1, mix=0.5), spec(500, 64, 2, 0.3, 0.5, -0.3)),
    # the DINOv2-S width with 200 images a side (n < d: both covariances singular, rank 199)
    "separated_200x384": (spec(200, 384, 3, mix=0.5), spec(200, 384, 4, 0.3, 0.5, -0.3)),
    # the same distribution, new draws: only sampling noise remains
    "same_200x384": (spec(200, 384, 5, mix=0.5), spec(200, 384, 6, mix=0.5)),
    # near-singular: 24 and 30 images of width 384 (ranks 23 and 29)
    "few_24_30x384": (spec(24, 384, 7, mix=0.5), spec(30, 384, 8, 0.2, 0.5, 0.2)),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="tokenizer/tests/fixtures/frechet")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"numpy": np.__version__, "scipy": scipy.__version__, "cases": {}}
    for name, (sa, sb) in CASES.items():
        fa, fb = features(sa), features(sb)
        (mu1, s1), (mu2, s2) = stats(fa), stats(fb)
        ref, sym = fd_sqrtm(mu1, s1, mu2, s2), fd_eigh(mu1, s1, mu2, s2)
        doc["cases"][name] = {
            "a": {**sa, "sum": float(fa.astype(np.float64).sum())},
            "b": {**sb, "sum": float(fb.astype(np.float64).sum())},
            "fd": ref,
            "fd_eigh": sym,
        }
        print(f"{name}: fd {ref:.6f} (sqrtm), {sym:.6f} (eigh), rel {abs(ref - sym) / abs(ref):.2e}")
    (out / "expected.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
