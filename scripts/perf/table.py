#!/usr/bin/env python3
"""The vqrae-rs / PyTorch table of `scripts/bench.sh`: reads OUT/<preset>-rows.jsonl (one JSON
line per row and implementation) and prints a markdown table with the ratio of throughputs
(> 1: vqrae-rs is faster) and both peak resident memories. A row measured against llama.cpp
instead of PyTorch (gguf_decode, `impl` "llama.cpp") has its llama.cpp figures in the PyTorch
columns and says so in its name. Standard library only."""

import json
import sys
from pathlib import Path

OTHERS = ("pytorch", "llama.cpp")  # the other side of a row: the first of these it has


def median(runs):
    """The run with the median throughput (the lower middle one for an even count)."""
    if not runs:
        return None
    return sorted(runs, key=lambda r: r["per_sec"])[(len(runs) - 1) // 2]


def span(runs) -> str:
    """ (min-max) of the throughputs when there are several runs."""
    if not runs or len(runs) < 2:
        return ""
    v = [r["per_sec"] for r in runs]
    return f" ({min(v):.0f}-{max(v):.0f})"


def step_profiles(out: Path) -> None:
    """Cached decoding step time by position: flat when the KV cache works."""
    print("\n| preset | rows | first 8 steps ms | middle 8 ms | last 8 ms | last / first |")
    print("|---|---|---|---|---|---|")
    for log in sorted(out.glob("*-rows.jsonl")):
        preset = log.name[: -len("-rows.jsonl")]
        for line in log.read_text().splitlines():
            if not line.strip().startswith("{"):
                continue
            r = json.loads(line)
            steps = r.get("step_seconds")
            if not steps or len(steps) < 24:
                continue
            mean = lambda xs: 1e3 * sum(xs) / len(xs)
            mid = len(steps) // 2
            first, middle, last = mean(steps[:8]), mean(steps[mid - 4 : mid + 4]), mean(steps[-8:])
            print(
                f"| {preset} | {r['batch']} | {first:.2f} | {middle:.2f} | {last:.2f} | "
                f"{last / first:.2f} |"
            )


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/perf")
    print("| preset | row | batch | unit | vqrae-rs | PyTorch | ratio | rounds | RSS rs MiB | RSS torch MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for log in sorted(out.glob("*-rows.jsonl")):
        preset = log.name[: -len("-rows.jsonl")]
        rows: dict[tuple[str, int], dict[str, list]] = {}
        for line in log.read_text().splitlines():
            if not line.strip().startswith("{"):
                continue
            r = json.loads(line)
            rows.setdefault((r["row"], r["batch"]), {}).setdefault(r["impl"], []).append(r)
        for (row, batch), by in rows.items():
            other = next((i for i in OTHERS if i in by), "pytorch")
            rs, pt = median(by.get("vqrae-rs")), median(by.get(other))
            name = row if other == "pytorch" else f"{row} (vs {other})"
            fmt = lambda r, k, f: f.format(r[k]) if r else "-"
            ratio = f"{rs['per_sec'] / pt['per_sec']:.2f}x" if rs and pt else "-"
            unit = (rs or pt)["unit"]
            spread = "/".join(str(len(by.get(i, []))) for i in ("vqrae-rs", other))
            print(
                f"| {preset} | {name} | {batch} | {unit} | {fmt(rs, 'per_sec', '{:.1f}')}{span(by.get('vqrae-rs'))} | "
                f"{fmt(pt, 'per_sec', '{:.1f}')}{span(by.get(other))} | {ratio} | {spread} | "
                f"{fmt(rs, 'peak_rss_mib', '{:.0f}')} | {fmt(pt, 'peak_rss_mib', '{:.0f}')} |"
            )


if __name__ == "__main__":
    main()
    step_profiles(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/perf"))
