#!/usr/bin/env python3
"""docs/PERFORMANCE.md's GPU tables from the result folders of scripts/gpu-bench.sh (unpacked
gpu-bench.tgz), oldest run first: each row's latest vqrae-rs and PyTorch figures and their ratio
(with the run each came from), the first vqrae-rs figure when a later run changed it, achieved
arithmetic (TFLOP/s, from the FLOP counts below) and bandwidth, each row's peak device memory
(nvidia-smi's memory.used, sampled every 100 ms while the row's process ran), and the
cached decoding step against the weights/bandwidth floor. Standard library only.

Usage: gpu_report.py RUN1 [RUN2 ...] [--json OUT]"""

import argparse
import json
import tomllib
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The paper preset's LM (bench/src/rows/init.rs, paper_lm): 12 x 768, MLP 2048, 12 heads.
PAPER_LM = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 12, "num_key_value_heads": 12}


def model_dims(preset: str) -> tuple[dict, dict]:
    """(LM config, tokenizer config) of a preset, from the files `bench init` used."""
    if preset == "default":
        lm = json.loads((REPO / "models/vqrae-easyvqa/lm/config.json").read_text())
        tok = json.loads((REPO / "models/vqrae-easyvqa/tokenizer/config.json").read_text())
        enc = tok["encoder"]
        tok_dims = {"image": tok["image_size"], "patch": enc["patch_size"], "enc_d": enc["hidden_size"],
                    "enc_mlp": int(enc["hidden_size"] * enc["mlp_ratio"]), "enc_layers": enc["num_layers"]}
    else:
        tok = tomllib.loads((REPO / "configs/paper.toml").read_text())
        enc = tok["encoder"]
        tok_dims = {"image": tok["image_size"], "patch": enc["patch_size"], "enc_d": enc["hidden_size"],
                    "enc_mlp": enc["intermediate_size"], "enc_layers": enc["num_hidden_layers"]}
        lm = PAPER_LM
    dec, q = tok["decoder"], tok["quantizer"]
    tok_dims.update({"dec_d": dec["hidden_size"], "dec_mlp": int(dec["hidden_size"] * dec["mlp_ratio"]),
                     "dec_layers": dec["num_layers"], "codes": q["codebook_size"], "e": q["dim"]})
    return lm, tok_dims


def vit_flops(tokens: int, d: int, mlp: int, layers: int) -> float:
    """Forward FLOPs of one image's ViT blocks: projections and MLP, plus attention's two
    products over the full (tokens x tokens) square."""
    return layers * (2 * tokens * (4 * d * d + 2 * d * mlp) + 4 * tokens * tokens * d)


def tok_flops(row: str, t: dict) -> float:
    """Per image: encode (patch embedding, encoder, projection to e, distances to every codeword;
    SimVQ's codebook projection once per call is left out), decode (embedding, decoder, head)."""
    n = (t["image"] // t["patch"]) ** 2
    enc = 2 * n * 3 * t["patch"] ** 2 * t["enc_d"] + vit_flops(n, t["enc_d"], t["enc_mlp"], t["enc_layers"])
    quant = 2 * n * t["enc_d"] * t["e"] + 2 * n * t["codes"] * t["e"]
    pix = 3 * (t["image"] ** 2) // n
    dec = 2 * n * t["e"] * t["dec_d"] + vit_flops(n, t["dec_d"], t["dec_mlp"], t["dec_layers"]) \
        + 2 * n * t["dec_d"] * pix
    if row == "tok_encode":
        return enc + quant
    if row == "tok_decode":
        return dec
    # stage-1 step on cached teacher features: projection, quantizer and decoder forward and
    # backward (x3), and the feature-matching loss through the frozen encoder on the
    # reconstruction, forward and backward to its input (x2)
    return 3 * (quant + dec) + 2 * enc


def lm_flops(row: str, lm: dict, info: dict, batch: int) -> float:
    d, layers = lm["hidden_size"], lm["num_hidden_layers"]
    width = lm["num_attention_heads"] * (d // lm["num_attention_heads"])
    seq = info["prompt_len"] + info["image_tokens"]
    body = 2 * info["lm_non_embedding_params"]
    head = 2 * d * info["vocab_size"]
    attn = lambda t: layers * 4 * t * t * width  # noqa: E731  (scores and weighted sum, full square)
    if row == "lm_prefill":  # logits of the last position only
        return batch * (body * seq + attn(seq) + head)
    if row == "train_lm":  # forward with every position's logits, backward twice that
        return 3 * batch * (body * seq + attn(seq) + head * seq)
    return float("nan")


def decode_step_bytes(lm: dict, info: dict, rows: int, position: int) -> float:
    """Bytes one cached step must read in bf16: every weight but the embedding table (a row per
    token is gathered), and the keys and values of `position` earlier tokens per row."""
    d = lm["hidden_size"]
    kv = lm["num_key_value_heads"] * (d // lm["num_attention_heads"])
    weights = info["lm_params"] - info["vocab_size"] * d
    return 2 * weights + rows * lm["num_hidden_layers"] * 2 * position * kv * 2


def parse_time(s: str) -> datetime:
    return datetime.strptime(s.strip(), "%Y/%m/%d %H:%M:%S.%f")


def peak_memory(run: Path, min_samples: int = 10) -> dict:
    """(preset, impl, row, batch) -> the highest memory.used (MiB) while the row's process ran:
    its CUDA context, weights, activations and, for PyTorch, what its caching allocator holds.
    Rows with fewer than `min_samples` samples (under ~1 s) are left out: at that resolution
    the previous process's teardown and the next one's start blur into them."""
    mem_file, marks_file = run / "gpumem.csv", run / "marks.tsv"
    if not mem_file.exists() or not marks_file.exists():
        return {}
    samples = []
    for line in mem_file.read_text().splitlines():
        parts = line.split(",")
        if len(parts) == 2 and parts[1].strip().isdigit():
            samples.append((parse_time(parts[0]), int(parts[1])))
    out, starts = {}, {}
    for line in marks_file.read_text().splitlines():
        when, what = line.split("\t")
        kind, preset, impl, row, batch = what.split()
        key = (preset, "vqrae-rs" if impl == "rs" else "pytorch", row.replace("-", "_"), int(batch))
        if kind == "start":
            starts[key] = parse_time(when)
        elif key in starts:
            t0, t1 = starts[key], parse_time(when)
            during = [m for t, m in samples if t0 <= t <= t1]
            if len(during) >= min_samples:
                out[key] = max(during)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows: dict[tuple, dict] = {}  # (preset, row, batch) -> {impl: [(run, record)]}
    infos, ceilings = {}, []
    for i, run in enumerate(a.runs, 1):
        c = run / "ceilings.json"
        if c.exists():
            ceilings.append((i, json.loads(c.read_text())))
        mem = peak_memory(run)
        for log in sorted(run.glob("*-rows.jsonl")):
            preset = log.name[: -len("-rows.jsonl")]
            bench = run / f"{preset}-bench.json"
            if bench.exists():
                infos[preset] = json.loads(bench.read_text())
            for line in log.read_text().splitlines():
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                r["gpu_mib"] = mem.get((preset, r["impl"], r["row"], r["batch"]))
                rows.setdefault((preset, r["row"], r["batch"]), {}).setdefault(r["impl"], []).append((i, r))

    print("Ceilings (scripts/perf/ceilings.py, PyTorch): " + "; ".join(
        f"run {i}: bf16 matmul {c['matmul_tflops']:.0f} TFLOP/s, copy {c['copy_gb_per_s'] / 1e3:.2f} TB/s"
        for i, c in ceilings))
    bf16_peak = max(c["matmul_tflops"] for _, c in ceilings) if ceilings else float("nan")
    print()
    print("| preset | row | batch | unit | vqrae-rs | PyTorch | ratio | vqrae-rs first run | ratio then "
          "| rs TFLOP/s | torch TFLOP/s | GPU MiB rs | GPU MiB torch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    report = []
    for (preset, row, batch), by in rows.items():
        if row == "lm_step_profile":
            continue
        lm, tok = model_dims(preset)
        info = infos[preset]
        flops = tok_flops(row, tok) * batch if row.startswith(("tok_", "train_tok")) \
            else lm_flops(row, lm, info, batch)
        rs, pt = by.get("vqrae-rs", []), by.get("pytorch", [])
        last_rs, last_pt = (rs[-1] if rs else None), (pt[-1] if pt else None)
        first_rs = rs[0] if len(rs) > 1 and rs[0][0] != rs[-1][0] else None
        ratio = last_rs[1]["per_sec"] / last_pt[1]["per_sec"] if last_rs and last_pt else None
        # the first run's ratio against PyTorch of that same run, when it had one
        pt_then = next((r for i, r in pt if first_rs and i == first_rs[0]), None)
        ratio_then = first_rs[1]["per_sec"] / pt_then["per_sec"] if first_rs and pt_then else None
        tflops = lambda rec: flops / rec["seconds_per_iter"] / 1e12 if rec and flops == flops else None  # noqa: E731
        fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)  # noqa: E731
        cell = lambda x: "-" if x is None else f"{x[1]['per_sec']:.1f} (run {x[0]})"  # noqa: E731
        print(f"| {preset} | {row} | {batch} | {(last_rs or last_pt)[1]['unit']} | {cell(last_rs)} | "
              f"{cell(last_pt)} | {fmt(ratio, '{:.2f}x')} | {cell(first_rs)} | {fmt(ratio_then, '{:.2f}x')} | "
              f"{fmt(tflops(last_rs and last_rs[1]))} | {fmt(tflops(last_pt and last_pt[1]))} | "
              f"{fmt(last_rs and last_rs[1]['gpu_mib'], '{:.0f}')} | {fmt(last_pt and last_pt[1]['gpu_mib'], '{:.0f}')} |")
        report.append({"preset": preset, "row": row, "batch": batch, "flops_per_iter": flops,
                       "rs": last_rs and {"run": last_rs[0], **last_rs[1]},
                       "torch": last_pt and {"run": last_pt[0], **last_pt[1]},
                       "rs_first": first_rs and {"run": first_rs[0], **first_rs[1]},
                       "ratio": ratio, "ratio_first": ratio_then})
    print(f"\n(TFLOP/s from the FLOP counts of this script; the bf16 matmul ceiling is {bf16_peak:.0f}; "
          "f32 rows run without TF32.)")

    copy = max(c["copy_gb_per_s"] for _, c in ceilings) * 1e9 if ceilings else float("nan")
    print("\n| preset | rows | run | step ms (first 8 / middle 8 / last 8) | bytes per step MB | floor ms "
          "| step / floor | achieved GB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for (preset, row, batch), by in rows.items():
        if row != "lm_step_profile":
            continue
        lm, _ = model_dims(preset)
        info = infos[preset]
        for run, r in by.get("vqrae-rs", []):
            steps = r.get("step_seconds") or []
            if len(steps) < 24:
                continue
            mid = len(steps) // 2
            mean = lambda xs: 1e3 * sum(xs) / len(xs)  # noqa: E731
            first, middle, last = mean(steps[:8]), mean(steps[mid - 4: mid + 4]), mean(steps[-8:])
            pos = info["prompt_len"] + mid
            nbytes = decode_step_bytes(lm, info, batch, pos)
            floor = 1e3 * nbytes / copy
            print(f"| {preset} | {batch} | {run} | {first:.2f} / {middle:.2f} / {last:.2f} | {nbytes / 1e6:.1f} | "
                  f"{floor:.3f} | {middle / floor:.0f}x | {nbytes / (middle / 1e3) / 1e9:.0f} |")
    if a.json:
        a.json.write_text(json.dumps({"ceilings": dict(ceilings), "rows": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
