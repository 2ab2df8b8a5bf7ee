#!/usr/bin/env bash
# Reproduces the unified-LM figures on CPU: the referee, the default joint LM (VQA + text-to-image
# from one checkpoint), its held-out VQA accuracy per question kind, and its text-to-image rate
# judged by the referee at several guidance scales. Reports go to docs/results/lm/.
#
#   scripts/lm-experiments.sh [PART ...]
#
# PARTS (default: all, in this order):
#   referee   train the referee on real easy-VQA training images  -> models/referee-easyvqa
#   train     joint LM on $TOKENIZER                               -> models/vqrae-easyvqa
#   eval      eval-vqa on the 9,673 test questions, eval-t2i at CFG 1, 2, 3, 5 (8 seeds, and 32
#             fresh seeds), sample grids
#
# The run goes to runs/lm-joint (resumed if interrupted). VQRAE_BIN overrides the binary.
# TOKENIZER defaults to the default tokenizer (models/tokenizer-easyvqa, stage 2 continued), the
# one the shipped model was trained on and copies into its own directory;
# TOKENIZER=models/tokenizer-easyvqa-s2 trains on the 600-step stage 2 (the previous shipped
# model's), TOKENIZER=models/tokenizer-easyvqa-v1 on the first recipe's.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${VQRAE_BIN:-target/debug/vqrae}
[[ -n ${VQRAE_BIN:-} ]] || cargo build --quiet
OUT=docs/results/lm
MODEL=models/vqrae-easyvqa
REFEREE=models/referee-easyvqa
mkdir -p "$OUT" runs models
TOKENIZER=${TOKENIZER:-models/tokenizer-easyvqa}

part_referee() {
    "$BIN" train-referee --config configs/referee.toml -o "$REFEREE" --json docs/results/referee/referee.json
    # its verdict on reconstructions of real test images: the ceiling through each tokenizer
    "$BIN" eval-referee --referee "$REFEREE" --tokenizer models/tokenizer-easyvqa-v1 \
        --json docs/results/referee/eval.json
    "$BIN" eval-referee --referee "$REFEREE" --tokenizer models/tokenizer-easyvqa-s2 \
        --json docs/results/referee/eval-v2.json
    "$BIN" eval-referee --referee "$REFEREE" --tokenizer models/tokenizer-easyvqa \
        --json docs/results/referee/eval-v4.json
}

part_train() {
    "$BIN" train-lm --config configs/lm/joint-easyvqa.toml --tokenizer "$TOKENIZER" \
        --run runs/lm-joint -o "$MODEL" >"$OUT/train.json"
    "$BIN" plot --run runs/lm-joint --keys loss_t2i,loss_vqa,grad_norm -o "$OUT/curves.png" >/dev/null
}

part_eval() {
    "$BIN" eval-vqa --model "$MODEL" --json "$OUT/vqa.json" >/dev/null
    # easy-VQA's 24 captions and 100 held-out procedural scenes' (judged per skill)
    "$BIN" eval-t2i --model "$MODEL" --referee "$REFEREE" --guidance 1,2,3,5 --scenes 100 \
        --grids "$OUT" --json "$OUT/t2i.json" >/dev/null
    # the README's figures (need Pillow): a red circle, a green rectangle, a blue triangle, a
    # yellow circle, a teal rectangle, a black triangle; the first eight scenes (their full grids,
    # ~5 MB each, are not kept)
    "${PYTHON:-python3}" scripts/lm_samples.py "$OUT/grid-cfg2.png" "$OUT/samples-cfg2.png"
    "${PYTHON:-python3}" scripts/lm_samples.py --first 8 "$OUT/scenes-grid-cfg2.png" \
        "$OUT/samples-scenes-cfg2.png"
    rm -f "$OUT"/scenes-grid-cfg*.png
    # the same at four times the images, on seeds no setting was chosen on
    "$BIN" eval-t2i --model "$MODEL" --referee "$REFEREE" --guidance 1,2,3,5 -n 32 --first-seed 100 \
        --json "$OUT/t2i-fresh-seeds.json" >/dev/null
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(referee train eval)
for p in "${parts[@]}"; do
    echo "== $p" >&2
    "part_$p"
done
