#!/usr/bin/env bash
# The CUDA build of `vqrae` for the GPU machine (../shared/gpu.md): nvcc and CUDA libraries from
# PyPI wheels, sm_90, into target/cuda; then compressed to .gpu/vqrae.xz for the device tool to
# carry (a clean build takes ~12 min on 2 cores; target/cuda is kept for incremental builds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo fetch
# shellcheck disable=SC1090
source <(../shared/scripts/cuda-toolchain.sh)
CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda
mkdir -p .gpu
strip -o .gpu/vqrae target/cuda/release/vqrae
xz -T2 -6 -f .gpu/vqrae
ls -la .gpu/vqrae.xz
