#!/usr/bin/env bash
# The CUDA build of `vqrae` for the GPU machine (docs/GPU.md): the toolchain from
# scripts/cuda-toolchain.sh (a system CUDA toolkit if one is set up, else nvcc and the CUDA
# libraries from PyPI wheels, sm_90), built into target/cuda; then stripped and compressed to
# .gpu/vqrae.xz for the device tool to carry (a clean build takes ~12 min on 2 cores;
# target/cuda is kept for incremental builds). Extra arguments go to cuda-toolchain.sh (its DIR).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/.."
cargo fetch   # cudarc's source must be in ~/.cargo/registry for the libcuda link stub
# the same exports as `source <(scripts/cuda-toolchain.sh)`, but a failing toolchain stops here
EXPORTS=$("$HERE/cuda-toolchain.sh" "$@")
eval "$EXPORTS"
CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda
mkdir -p .gpu
strip -o .gpu/vqrae target/cuda/release/vqrae
xz -T2 -6 -f .gpu/vqrae
ls -la .gpu/vqrae.xz
