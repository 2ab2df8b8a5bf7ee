#!/usr/bin/env python3
"""The llama.cpp side of the `gguf_decode` row of scripts/bench.sh: llama.cpp's own
`llama-batched-bench` (built by scripts/perf/llamacpp-setup.sh) on the same GGUF, threads and
sizes as `vqrae bench run --row gguf-decode`, printed as one JSON line in the fields of
`reference.py run` (`impl` "llama.cpp"), so scripts/perf/table.py pairs it with the Rust line.

    scripts/perf/llamacpp_reference.py run --dir .bench/default --batch 16 [--threads 2] [--iters 1]
    scripts/perf/llamacpp_reference.py self-test      # the output parsing, no llama.cpp needed

What is run: `llama-batched-bench -m GGUF -t T -tb T -c B*(PP+TG) -npp PP -ntg TG -npl B,...
--no-mmap -ngl 0 --output-format jsonl`: for each entry of -npl, the KV cache cleared, B
sequences of PP tokens prefilled (untimed here), then TG decodes of B tokens (one per sequence)
timed: S_TG = B*TG / T_TG, the Rust row's per_sec. -npl repeats B warmup + iters times; the
warmup runs are dropped (the Rust row also makes untimed calls first). --no-mmap reads the
weights into memory as the Rust row does, so both peak RSS figures hold the model once;
peak_rss_mib is the child's (RUSAGE_CHILDREN). Standard library only.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GGUF_LINK = "smollm2.gguf"  # what `vqrae bench init` links into a bench dir
SMOLLM2 = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # under the data root
TABLE_COLUMNS = ["pp", "tg", "pl", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg", "t", "speed"]


def default_bin() -> Path:
    work = Path(os.environ.get("LLAMACPP_DIR", REPO / ".bench" / "llamacpp"))
    return work / "build" / "bin" / "llama-batched-bench"


def gguf_path(gguf, directory) -> Path:
    """--gguf, else DIR/smollm2.gguf, else SmolLM2 under the data root (as the Rust row)."""
    if gguf:
        return Path(gguf)
    data = Path(os.environ.get("VQRAE_DATA") or ".data")
    candidates = ([Path(directory) / GGUF_LINK] if directory else []) + [data / SMOLLM2]
    for p in candidates:
        if p.is_file():
            return p
    sys.exit(f"llamacpp_reference: no GGUF at {' or '.join(map(str, candidates))}: "
             "run scripts/setup-smollm2.sh or pass --gguf")


def parse_runs(text: str) -> list:
    """llama-batched-bench's result rows, as dicts of TABLE_COLUMNS: its JSONL lines
    (--output-format jsonl) or, failing those, its markdown table."""
    runs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            r = json.loads(line)
            runs.append({k: r[k] for k in TABLE_COLUMNS})
    if runs:
        return runs
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(TABLE_COLUMNS):
            continue
        try:
            values = [float(c) for c in cells]
        except ValueError:
            continue  # the header and the |---| line
        r = dict(zip(TABLE_COLUMNS, values))
        for k in ("pp", "tg", "pl", "n_kv"):
            r[k] = int(r[k])
        runs.append(r)
    return runs


def parse_info(text: str) -> dict:
    """The file's type (`file type = Q4_1`) and llama.cpp's build (`build: 1 (abc123)`)."""
    out = {}
    m = re.search(r"file type\s*=\s*(\S+)", text)
    if m:
        out["dtype"] = m.group(1).lower()
    m = re.search(r"^build:\s*(\S+ \(\S+\))", text, re.M)
    if m:
        out["llamacpp_build"] = m.group(1)
    return out


def summarize(runs: list, batch: int, pp: int, tg: int, warmup: int) -> dict:
    """The timed runs (after `warmup`) of the B/PP/TG asked for: S_TG over them all."""
    mine = [r for r in runs if (r["pl"], r["pp"], r["tg"]) == (batch, pp, tg)]
    timed = mine[warmup:]
    if not timed:
        raise ValueError(f"no timed llama-batched-bench run for B={batch} PP={pp} TG={tg} "
                         f"({len(mine)} runs, {warmup} warmup)")
    t_tg = sum(r["t_tg"] for r in timed) / len(timed)
    return {"per_sec": batch * tg / t_tg, "seconds_per_iter": t_tg, "iters": len(timed),
            "prefill_per_sec": sum(r["speed_pp"] for r in timed) / len(timed)}


def run(a) -> dict:
    binary = Path(a.bin) if a.bin else default_bin()
    if not os.access(binary, os.X_OK):
        sys.exit(f"llamacpp_reference: no {binary}: run scripts/perf/llamacpp-setup.sh")
    gguf = gguf_path(a.gguf, a.dir)
    npl = ",".join([str(a.batch)] * (a.warmup + a.iters))
    cmd = [str(binary), "-m", str(gguf), "-t", str(a.threads), "-tb", str(a.threads),
           "-c", str(a.batch * (a.pp + a.tg)), "-b", "2048", "-ub", "512",
           "-npp", str(a.pp), "-ntg", str(a.tg), "-npl", npl,
           "--no-mmap", "-ngl", "0", "--output-format", "jsonl"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    text = p.stdout + "\n" + p.stderr
    if p.returncode != 0:
        sys.stderr.write(text[-4000:])
        sys.exit(f"llamacpp_reference: {' '.join(cmd)} exited {p.returncode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    s = summarize(parse_runs(text), a.batch, a.pp, a.tg, a.warmup)
    info = parse_info(text)
    out = {"impl": "llama.cpp", "row": "gguf_decode", "batch": a.batch, "device": "cpu",
           "dtype": info.get("dtype", "gguf"), "unit": "tokens/s", "per_sec": s["per_sec"],
           "seconds_per_iter": s["seconds_per_iter"], "iters": s["iters"], "peak_rss_mib": peak,
           "threads": str(a.threads), "pp": a.pp, "tg": a.tg, "gguf": gguf.name,
           "prefill_per_sec": s["prefill_per_sec"]}
    if "llamacpp_build" in info:
        out["llamacpp_build"] = info["llamacpp_build"]
    return out


SAMPLE_TABLE = """
main: n_kv_max = 4096, n_batch = 2048, n_ubatch = 512, flash_attn = 0, is_pp_shared = 0, n_gpu_layers = 0, n_threads = 2, n_threads_batch = 2

|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|   128 |    128 |   16 |   4096 |    1.570 |  1304.68 |    8.455 |   242.23 |   10.024 |   408.60 |
|   128 |    128 |   16 |   4096 |    1.560 |  1312.68 |    8.000 |   256.00 |    9.560 |   428.45 |
"""
SAMPLE_JSONL = """print_info: file type   = Q4_1
build: 1 (4227c9b)
{"n_kv_max": 256, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 0, "is_pp_shared": 0, "n_gpu_layers": 0, "n_threads": 2, "n_threads_batch": 2, "pp": 128, "tg": 128, "pl": 1, "n_kv": 256, "t_pp": 0.2, "speed_pp": 640.0, "t_tg": 2.0, "speed_tg": 64.0, "t": 2.2, "speed": 116.36}
{"n_kv_max": 256, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 0, "is_pp_shared": 0, "n_gpu_layers": 0, "n_threads": 2, "n_threads_batch": 2, "pp": 128, "tg": 128, "pl": 1, "n_kv": 256, "t_pp": 0.2, "speed_pp": 640.0, "t_tg": 1.0, "speed_tg": 128.0, "t": 1.2, "speed": 213.3}
"""


def self_test() -> None:
    """The parsing on fixed llama-batched-bench output (no binary, no timing)."""
    table = parse_runs(SAMPLE_TABLE)
    assert len(table) == 2 and table[0]["pl"] == 16 and table[0]["t_tg"] == 8.455, table
    s = summarize(table, 16, 128, 128, warmup=1)
    assert s["iters"] == 1 and abs(s["per_sec"] - 256.0) < 1e-9, s
    runs = parse_runs(SAMPLE_JSONL)
    assert [r["t_tg"] for r in runs] == [2.0, 1.0], runs
    s = summarize(runs, 1, 128, 128, warmup=0)  # the mean time: 128 / 1.5
    assert s["iters"] == 2 and abs(s["per_sec"] - 128 / 1.5) < 1e-9, s
    assert parse_info(SAMPLE_JSONL) == {"dtype": "q4_1", "llamacpp_build": "1 (4227c9b)"}
    for bad in (lambda: summarize(runs, 16, 128, 128, 0), lambda: summarize(runs, 1, 128, 128, 2)):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("no timed run must be an error")
    assert parse_runs("no table here\n|---|---|\n") == []
    print("llamacpp_reference self-test: ok")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="time gguf_decode with llama-batched-bench: one JSON line")
    r.add_argument("--dir", help="bench dir (its smollm2.gguf link)")
    r.add_argument("--gguf", help="the GGUF (default: DIR/smollm2.gguf, else the data root's SmolLM2)")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--pp", type=int, default=128)
    r.add_argument("--tg", type=int, default=128)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--iters", type=int, default=1, help="timed runs (0: 1)")
    r.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    r.add_argument("--bin", help="llama-batched-bench (default: .bench/llamacpp/build/bin/)")
    sub.add_parser("self-test", help="check the output parsing on fixed text")
    a = ap.parse_args()
    if a.cmd == "self-test":
        self_test()
        return
    a.iters = max(a.iters, 1)
    if min(a.batch, a.pp, a.tg, a.threads) < 1 or a.warmup < 0:
        sys.exit("llamacpp_reference: --batch, --pp, --tg, --threads must be >= 1, --warmup >= 0")
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
