#!/usr/bin/env bash
# Create the Python environment that regenerates the SmolLM2 reference fixtures (scripts/smollm2_reference.py):
# ${VQRAE_DATA:-<repo>/.data}/venv-reference with the pinned versions the committed fixtures were made with
# (accelerate too: transformers refuses to load a GGUF without it).
#
#   scripts/reference-venv.sh                      # then:
#   .data/venv-reference/bin/python scripts/smollm2_reference.py
#
# Only for regenerating lm/tests/fixtures/smollm2/: neither the build nor the tests use this venv (the fixtures are
# committed). It is large (torch from PyPI pulls its CUDA wheels: ~5 GB; PIP_EXTRA=... passes extra pip options,
# e.g. PIP_EXTRA="--index-url https://download.pytorch.org/whl/cpu" for a CPU-only torch if that index has this
# version). Idempotent: an existing venv with exactly these versions is kept (FORCE=1 re-creates it).
# PYTHON=... picks the interpreter (3.10 to 3.13).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
DATA="${VQRAE_DATA:-$REPO/.data}"
VENV="$DATA/venv-reference"
PYTHON="${PYTHON:-python3}"
PINS=(torch==2.15.0 transformers==4.46.3 tokenizers==0.20.3 gguf==0.19.0 numpy==2.4.6 jinja2==3.1.6 accelerate==1.1.1 psutil==7.2.2
      safetensors==0.8.0)

# True when the venv imports every pinned package at its pinned version.
pinned_ok() {
    "$VENV/bin/python" - "${PINS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
import torch, transformers, tokenizers, gguf, numpy, jinja2, accelerate, safetensors  # noqa: F401
PY
}

if [[ -z "${FORCE:-}" && -x "$VENV/bin/python" ]] && pinned_ok; then
    echo "reference-venv: $VENV already has ${PINS[*]} (FORCE=1 to re-create)"
    exit 0
fi

echo "reference-venv: creating $VENV (~5 GB with torch's CUDA wheels)"
rm -rf "$VENV"
mkdir -p "$DATA"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check ${PIP_EXTRA:-} "${PINS[@]}"
pinned_ok || { echo "reference-venv: error: $VENV does not import ${PINS[*]}" >&2; exit 1; }
echo "reference-venv: done -> $VENV"
