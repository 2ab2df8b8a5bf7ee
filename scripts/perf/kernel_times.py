#!/usr/bin/env python3
"""Summarise the Nsight Compute CSVs of scripts/gpu-profile.sh: for each profiled call, how many
kernels ran, their summed GPU time, and the kernels that took most of it (grouped by name, the
template arguments cut). Set against the call's wall time (the bench rows), the difference is
the host's share: launches, allocation, synchronisation. Standard library only.

Usage: kernel_times.py DIR [--top N] [--json OUT]"""

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path

UNITS = {"ns": 1e-9, "nsecond": 1e-9, "us": 1e-6, "usecond": 1e-6, "ms": 1e-3, "msecond": 1e-3,
         "s": 1.0, "second": 1.0}


def short(name: str) -> str:
    """A kernel's name without template arguments, parameters or namespaces, so that one kind of
    kernel groups under one name (cuBLAS's and cutlass's long names included)."""
    name = re.sub(r"\(.*", "", name)
    depth, out = 0, []
    for ch in name:  # drop <...> at any depth
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    name = "".join(out).strip()
    name = name.split("::")[-1].split()[-1] if name else name
    if re.search(r"gemm|sm90_xmma|cutlass|nvjet|cublas", name, re.I):
        return "gemm (cuBLAS/cutlass: " + name[:40] + ")"
    return name


def load(path: Path) -> list[tuple[str, float]]:
    rows = list(csv.reader(path.open()))
    if len(rows) < 2:
        return []
    head = rows[0]
    k, t = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    scale = UNITS.get(rows[1][t].strip(), None)
    body = rows[2:] if scale is not None else rows[1:]
    scale = scale or 1e-9
    return [(r[k], float(r[t].replace(",", "")) * scale) for r in body if len(r) > t and r[t]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the summary here")
    a = ap.parse_args()
    summary = {}
    for path in sorted(a.dir.glob("*.csv")):
        kernels = load(path)
        if not kernels:
            continue
        by = defaultdict(lambda: [0, 0.0])
        for name, secs in kernels:
            g = by[short(name)]
            g[0] += 1
            g[1] += secs
        total = sum(s for _, s in kernels)
        top = sorted(by.items(), key=lambda kv: -kv[1][1])[: a.top]
        summary[path.stem] = {
            "kernels": len(kernels),
            "kernel_ms": 1e3 * total,
            "mean_kernel_us": 1e6 * total / len(kernels),
            "top": [{"kernel": n, "count": c, "ms": 1e3 * s, "share": s / total} for n, (c, s) in top],
        }
        print(f"\n{path.stem}: {len(kernels)} kernels, {1e3 * total:.2f} ms of GPU time "
              f"(mean {1e6 * total / len(kernels):.1f} us per kernel)")
        for n, (c, s) in top:
            print(f"  {1e3 * s:8.3f} ms  {100 * s / total:5.1f}%  x{c:<5d} {n}")
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
