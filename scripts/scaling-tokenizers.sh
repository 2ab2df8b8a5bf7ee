#!/usr/bin/env bash
# The tokenizers of the default scaling sweep (configs/scaling/easyvqa-scenes.toml), trained on
# easy-VQA + the procedural scenes (8,000 training images) on top of the default easy-VQA encoder
# (frozen: stage 1 only):
#   - the main one (2,000 steps, configs/train/stage1-scenes.toml), copied to
#     models/tokenizer-easyvqa-scenes and evaluated on both test sets;
#   - the codebook sweep's three (256 / 1,024 / 4,096 entries, 150 steps each).
# Usage: scripts/scaling-tokenizers.sh   (release build; ~30 min alone on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
BIN=target/release/vqrae
OUT=docs/results/scaling-scenes
mkdir -p "$OUT"
ENC=models/encoder-vit-s8-easyvqa

"$BIN" train-tokenizer --run runs/mixed-s1 --config configs/tokenizer-easyvqa.toml \
    --encoder "$ENC" --train configs/train/stage1-scenes.toml --dataset easy-vqa-scenes \
    >"$OUT/tokenizer-train.json"
rm -rf models/tokenizer-easyvqa-scenes
cp -r runs/mixed-s1/model models/tokenizer-easyvqa-scenes
for ds in easy-vqa scenes; do
    "$BIN" eval-tokenizer --model models/tokenizer-easyvqa-scenes --dataset "$ds" \
        --json "$OUT/tokenizer-eval-$ds.json" --grid "$OUT/tokenizer-recon-$ds.png" >/dev/null
done

for k in 256 1024 4096; do
    "$BIN" train-tokenizer --run "runs/mixed-size-$k" --config configs/tokenizer-easyvqa.toml \
        --encoder "$ENC" --train configs/train/sweep-stage1.toml --dataset easy-vqa-scenes \
        --codebook-size "$k" >"$OUT/tokenizer-size-$k-train.json"
done
