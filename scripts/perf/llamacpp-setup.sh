#!/usr/bin/env bash
# Build llama.cpp's own benchmark tools (llama-batched-bench, llama-bench) offline, for the `gguf_decode` row of
# scripts/bench.sh (scripts/perf/llamacpp_reference.py runs them). The source comes from PyPI: the sdist of
# llama-cpp-python vendors llama.cpp's full tree under vendor/llama.cpp, so nothing but the package registry is used.
#
#   scripts/perf/llamacpp-setup.sh         -> ${LLAMACPP_DIR:-<repo>/.bench/llamacpp}/build/bin/llama-batched-bench
#
# CPU only, Release, -DGGML_NATIVE=ON (tuned to this machine's CPU: rebuild on another one), no CURL, static libs.
# cmake comes from the system when there is one, else from PyPI into the venv ${LLAMACPP_VENV:-~/.venvs/llamacpp}.
# Idempotent: the sdist, the extracted tree and the build are each kept and reused (FORCE=1 redoes all of it).
# JOBS=N sets the build's parallelism (default 2). The build takes ~10 minutes on 2 cores.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
WORK="${LLAMACPP_DIR:-$REPO/.bench/llamacpp}"
VENV="${LLAMACPP_VENV:-$HOME/.venvs/llamacpp}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-2}"

# llama-cpp-python 0.3.16 vendors llama.cpp as of August 2025 (tools/batched-bench, tools/llama-bench).
VERSION="0.3.16"
SDIST="llama_cpp_python-$VERSION.tar.gz"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
BUILD="$WORK/build"
TARGETS=(llama-batched-bench llama-bench llama-quantize)

say() { echo "llamacpp-setup: $*" >&2; }
die() { echo "llamacpp-setup: error: $*" >&2; exit 1; }

if [[ -n "${FORCE:-}" ]]; then
    rm -rf "$WORK"
fi
mkdir -p "$WORK"

all_built() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ -x "$BUILD/bin/$t" ]] || return 1
    done
    [[ -f "$BUILD/.version" && "$(cat "$BUILD/.version")" == "$VERSION" ]]
}

if all_built; then
    say "already built (llama-cpp-python $VERSION; FORCE=1 to rebuild)"
else
    # 1. The sdist. --no-binary names only llama-cpp-python so that pip's metadata step may use wheels for its build
    # requirements (`:all:` would compile cmake itself from source first).
    if [[ ! -f "$WORK/$SDIST" ]]; then
        say "downloading llama-cpp-python==$VERSION (sdist) from PyPI"
        "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$VERSION" -d "$WORK/dl.tmp"
        mv "$WORK/dl.tmp/$SDIST" "$WORK/$SDIST"
        rm -rf "$WORK/dl.tmp"
    fi

    # 2. Extract (to a temporary sibling, renamed when complete).
    if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
        say "extracting $SDIST"
        rm -rf "$WORK/x.tmp" "$WORK/llama_cpp_python-$VERSION"
        mkdir -p "$WORK/x.tmp"
        tar -xzf "$WORK/$SDIST" -C "$WORK/x.tmp"
        mv "$WORK/x.tmp/llama_cpp_python-$VERSION" "$WORK/"
        rm -rf "$WORK/x.tmp"
        [[ -f "$SRC/tools/batched-bench/batched-bench.cpp" ]] || die "no tools/batched-bench in $SRC"
    fi

    # 3. cmake: the system's, else PyPI's.
    CMAKE="$(command -v cmake || true)"
    if [[ -z "$CMAKE" ]]; then
        if [[ ! -x "$VENV/bin/cmake" ]]; then
            say "no cmake on PATH: installing it from PyPI into $VENV"
            "$PYTHON" -m venv "$VENV"
            "$VENV/bin/python" -m pip install --quiet "cmake>=3.21,<5"
        fi
        CMAKE="$VENV/bin/cmake"
    fi
    say "cmake: $CMAKE ($("$CMAKE" --version | head -1))"

    # 4. Configure and build only the benchmark tools.
    start=$(date +%s)
    "$CMAKE" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF >"$WORK/configure.log" 2>&1 \
        || { tail -30 "$WORK/configure.log" >&2; die "cmake configure failed (log: $WORK/configure.log)"; }
    "$CMAKE" --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}" >"$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log" >&2; die "build failed (log: $WORK/build.log)"; }
    echo "$VERSION" >"$BUILD/.version"
    all_built || die "build finished but ${TARGETS[*]} are not all in $BUILD/bin"
    say "built in $(( $(date +%s) - start )) s"
fi

for t in "${TARGETS[@]}"; do
    echo "$BUILD/bin/$t"
done
