#!/usr/bin/env bash
# The CUDA toolchain for `cargo build --features cuda` (explained in docs/GPU.md).
#
# Usage:   source <(scripts/cuda-toolchain.sh [DIR])
#
# The script prints `export` lines on stdout (all its own messages go to stderr), so the
# environment is changed only in the shell that sources its output. It picks one of two routes:
#
#  * system: a CUDA toolkit is already installed. Taken when $CUDA_ROOT/bin/nvcc exists (a
#    CUDA_ROOT inside a PyPI `nvidia/cu13` tree, like the one this script exports, does not
#    count), or else when the `nvcc` on PATH lives under /usr/local/cuda*. The exports point at that
#    toolkit (CUDA_ROOT, CUDA_PATH, PATH, LIBRARY_PATH with its lib64 and lib64/stubs). The GPU
#    architecture is CUDA_COMPUTE_CAP if you set it, else what nvidia-smi reports at build time,
#    else 90 (H100/H200) when there is no nvidia-smi. cudarc reads the CUDA version from nvcc.
#
#  * wheels: no toolkit needed, no GPU needed, only PyPI. Installs CUDA 13.0's nvcc, nvvm, crt,
#    cccl, cudart, nvrtc, cuBLAS and cuRAND from NVIDIA's PyPI wheels into a venv under
#    DIR (default $HOME/.cache/cuda13-toolchain; ~700 MB of wheels the first time, ~1.2 GB
#    installed), adds the unversioned .so names the linker looks for (the wheels ship only
#    libX.so.N), and builds a libcuda.so link stub from the driver functions cudarc 0.19
#    declares (no wheel ships libcuda; the real libcuda.so.1 comes from the GPU machine's driver
#    at run time). cudarc's source must be in ~/.cargo/registry first: run `cargo fetch`.
#    Targets sm_90 (CUDA_COMPUTE_CAP=90) unless CUDA_COMPUTE_CAP is set. Running it again
#    reuses what is there.
#
# CUDA_TOOLCHAIN=system|wheels forces a route (default: system when one is found, else wheels).
# CUDAFORGE_THREADS (parallel nvcc jobs while candle's kernels compile) defaults to nproc.
set -euo pipefail

DIR=${1:-$HOME/.cache/cuda13-toolchain}
ROUTE=${CUDA_TOOLCHAIN:-auto}
THREADS=${CUDAFORGE_THREADS:-$(nproc 2>/dev/null || echo 2)}

# --- the system toolkit ----------------------------------------------------------------------
find_system_cuda() {
    # a CUDA_ROOT that this script itself exported for the wheels is not a system toolkit
    if [ -n "${CUDA_ROOT:-}" ] && [ -x "$CUDA_ROOT/bin/nvcc" ] && [[ "$CUDA_ROOT" != */nvidia/cu13 ]]; then
        echo "$CUDA_ROOT"; return 0
    fi
    local nvcc
    nvcc=$(command -v nvcc 2>/dev/null || true)
    [ -n "$nvcc" ] || return 1
    nvcc=$(readlink -f "$nvcc")
    case "$nvcc" in
        /usr/local/cuda*/bin/nvcc) dirname "$(dirname "$nvcc")" ;;
        *) return 1 ;;
    esac
}

print_system_exports() {
    local root=$1 lib=$1/lib64 libs
    [ -d "$lib" ] || lib=$1/lib
    libs=$lib
    [ -d "$lib/stubs" ] && libs=$libs:$lib/stubs   # libcuda.so stub, for machines without a driver
    echo "cuda-toolchain: system CUDA toolkit at $root ($("$root/bin/nvcc" --version | grep -o 'release [0-9.]*'))" >&2
    cat <<EXPORTS
export CUDA_ROOT=$root
export CUDA_PATH=$root
export PATH=$root/bin:\$PATH
export LIBRARY_PATH=$libs:\${LIBRARY_PATH:-}
export CUDAFORGE_THREADS=$THREADS
EXPORTS
    if [ -n "${CUDA_COMPUTE_CAP:-}" ]; then
        echo "export CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
    elif ! nvidia-smi --query-gpu=compute_cap --format=csv >/dev/null 2>&1; then
        echo "export CUDA_COMPUTE_CAP=90"   # no GPU to ask: build for H100/H200
    fi
}

if [ "$ROUTE" != wheels ]; then
    if ROOT=$(find_system_cuda); then
        print_system_exports "$ROOT"
        exit 0
    elif [ "$ROUTE" = system ]; then
        echo "cuda-toolchain: CUDA_TOOLCHAIN=system, but no toolkit found (set CUDA_ROOT)" >&2
        exit 1
    fi
fi

# --- the PyPI wheels -------------------------------------------------------------------------
WHEELS=(
    "nvidia-cuda-nvcc==13.0.*"     # nvcc, ptxas, fatbinary
    "nvidia-nvvm==13.0.*"          # cicc / libnvvm, which nvcc calls
    "nvidia-cuda-crt==13.0.*"      # nvcc's crt/ headers
    "nvidia-cuda-cccl==13.0.*"     # CUB / Thrust / libcu++ headers used by candle's kernels
    "nvidia-cuda-runtime==13.0.*"  # libcudart.so.13 and cuda_runtime.h
    "nvidia-cuda-nvrtc==13.0.*"    # libnvrtc.so.13
    "nvidia-cublas==13.0.*"        # libcublas.so.13, libcublasLt.so.13
    "nvidia-curand"                # libcurand.so.10
)

if [ ! -x "$DIR/venv/bin/python" ]; then
    echo "cuda-toolchain: creating $DIR/venv" >&2
    mkdir -p "$DIR"
    python3 -m venv "$DIR/venv" >&2
fi
SITE=$("$DIR/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
CU=$SITE/nvidia/cu13   # every CUDA 13 wheel installs into this one tree

if [ ! -x "$CU/bin/nvcc" ]; then
    echo "cuda-toolchain: installing the CUDA 13.0 wheels into $DIR/venv (~700 MB)" >&2
    "$DIR/venv/bin/pip" install -q --only-binary=:all: "${WHEELS[@]}" >&2
fi

# The linker is asked for -lcublas etc.; give the versioned libraries their plain names.
for pair in cublas:13 cublasLt:13 cudart:13 nvrtc:13 curand:10; do
    name=${pair%%:*} ver=${pair##*:}
    if [ ! -e "$CU/lib/lib$name.so" ]; then
        ln -s "lib$name.so.$ver" "$CU/lib/lib$name.so"
    fi
done

# A link-time stand-in for the driver library: one dummy function per cu* symbol that cudarc's
# driver bindings declare, with the soname libcuda.so.1 so the binary asks the real one at run time.
if [ ! -e "$CU/lib/stubs/libcuda.so" ]; then
    CARGO_DIR=${CARGO_HOME:-$HOME/.cargo}
    SYS=$(ls -d "$CARGO_DIR"/registry/src/*/cudarc-0.19.*/src/driver/sys 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$SYS" ]; then
        echo "cuda-toolchain: cudarc 0.19's source is not in $CARGO_DIR/registry; run \`cargo fetch\` and retry" >&2
        exit 1
    fi
    echo "cuda-toolchain: building the libcuda link stub from $SYS" >&2
    mkdir -p "$CU/lib/stubs"
    grep -rhoE 'pub unsafe fn cu[A-Za-z0-9_]+' "$SYS" | awk '{ print "int " $4 "(void) { return 999; }" }' \
        | sort -u > "$DIR/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$DIR/libcuda_stub.c"
fi

echo "cuda-toolchain: CUDA 13.0 from PyPI wheels at $CU" >&2
cat <<EXPORTS
export CUDA_ROOT=$CU
export CUDA_PATH=$CU
export PATH=$CU/bin:\$PATH
export LIBRARY_PATH=$CU/lib:$CU/lib/stubs:\${LIBRARY_PATH:-}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export CUDAFORGE_THREADS=$THREADS
EXPORTS
