#!/usr/bin/env python3
"""The machine's measured ceilings, which the benchmark's achieved figures are read against:
dense matmul throughput (bf16 on a GPU, f32 on the CPU) and device memory copy bandwidth.
Prints one JSON object. Usage: ceilings.py [--device cpu|cuda] [--threads T]"""

import argparse
import json
import time

import torch


def best_of(fn, sync, repeats: int = 5) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    n = 8192 if a.device == "cuda" else 1024
    x = torch.randn(n, n, device=dev, dtype=dtype)
    y = torch.randn(n, n, device=dev, dtype=dtype)
    reps = 20 if a.device == "cuda" else 3

    def mm():
        for _ in range(reps):
            torch.matmul(x, y)

    t = best_of(mm, sync)
    matmul = 2 * n**3 * reps / t
    # copy bandwidth: read + write of a large buffer
    elems = (1 << 30) // 2 if a.device == "cuda" else (1 << 26)
    src = torch.empty(elems, device=dev, dtype=dtype)
    dst = torch.empty_like(src)
    t = best_of(lambda: dst.copy_(src), sync)
    copy = 2 * src.numel() * src.element_size() / t
    print(json.dumps({
        "device": a.device,
        "name": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "matmul_tflops": matmul / 1e12,
        "copy_gb_per_s": copy / 1e9,
    }))


if __name__ == "__main__":
    main()
