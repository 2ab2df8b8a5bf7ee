#!/usr/bin/env bash
# Stage 2 of the DINOv2-S tokenizer and what it does to understanding (docs/TOKENIZER.md,
# "Stage 2 on DINOv2-S"; docs/PRETRAINED.md, "One encoder for both paths"):
#   1. train: from the stage-1 model (S1, default runs/dinov2s-s1/model), the encoder trains too,
#      self-distilled to the original DINOv2-S (configs/train/stage2-dinov2s.toml) -> runs/dinov2s-s2
#   2. tokenizer: held-out PSNR, SSIM, use, perplexity, feature cosine to DINOv2-S and FD-DINOv2
#      per source, and a grid
#   3. Table 6 with the LM as the judge: the phase-2 LLaVA model (models/vqrae-smollm2, its
#      projector trained on the original DINOv2-S) answers the same questions from the stage-2
#      encoder's features (eval-llava --features-from); its own-encoder figures are in
#      docs/results/lm/llava-smollm2-phase2.json
#
#   scripts/dinov2s-stage2.sh [train|eval|vqa|all]   (default all)
#
# Needs scripts/setup-data.sh, scripts/setup-models.sh and a stage-1 model (docs/TOKENIZER.md,
# "Stage 1 on DINOv2-S": about an hour on two cores). On two CPU cores: ~6 min of teacher
# features, then ~5 s a step; ~10 min for step 2 and ~16 min for step 3. A finished run or
# report is kept (delete it to redo it). VQRAE_BIN overrides the binary (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${VQRAE_BIN:-target/release/vqrae}
[[ -n ${VQRAE_BIN:-} ]] || cargo build --release --quiet
S1=${S1:-runs/dinov2s-s1/model}
RUN=runs/dinov2s-s2
TRAIN=configs/train/stage2-dinov2s.toml
ENC=.data/models/dinov2-small
TOK=docs/results/tokenizer
LM=docs/results/lm
mkdir -p "$TOK" "$LM" runs

part=${1:-all}
if [[ $part == train || $part == all ]]; then
    if [[ -f $RUN/model/config.json ]]; then
        echo "keeping $RUN" >&2
    else
        [[ -f $S1/config.json ]] || { echo "no stage-1 model at $S1 (set S1)" >&2; exit 1; }
        "$BIN" train-tokenizer --init "$S1" --teacher "$ENC" --train "$TRAIN" --run "$RUN" >"$TOK/dinov2s-s2-train.json"
    fi
fi
if [[ $part == eval || $part == all ]] && [[ ! -s $TOK/dinov2s-s2-eval.json ]]; then
    "$BIN" eval-tokenizer --model "$RUN/model" --mix "$TRAIN" --reference "$ENC" --fd-encoder "$ENC" \
        --grid "$TOK/dinov2s-s2-grid.png" --json "$TOK/dinov2s-s2-eval.json" >/dev/null
fi
if [[ $part == vqa || $part == all ]] && [[ ! -s $LM/llava-smollm2-stage2-features.json ]]; then
    "$BIN" eval-llava --model models/vqrae-smollm2 --f32 --easy-vqa 1000 --scenes 100 \
        --features-from "$RUN/model" --json "$LM/llava-smollm2-stage2-features.json" >/dev/null
fi
