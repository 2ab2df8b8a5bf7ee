#!/usr/bin/env bash
# The paper's Table 5 on DINOv2-S (docs/TOKENIZER.md, "Table 5 on DINOv2-S"): stage 1 of the
# DINOv2-S tokenizer (configs/tokenizer-dinov2s.toml) at one budget (configs/train/
# sweep-dinov2s.toml, 400 steps of 16) for each codebook width e at 4,096 entries, then each
# size at the width BEST_E; every run measured on the held-out images of the four sources with
# FD-DINOv2. Runs share the frozen encoder's feature cache (runs/feature-cache/).
#
#   scripts/dinov2s-table5.sh [train|eval|all]   (default all; BEST_E=384 unless set)
#
# Needs scripts/setup-data.sh and scripts/setup-models.sh. Runs go to runs/table5-*, reports to
# docs/results/tokenizer/table5-*-eval.json (a run with a model, and a report written, is kept:
# delete it to redo it).
# About 8 minutes of training and 3 of evaluation a run on two CPU cores. VQRAE_BIN overrides
# the binary (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${VQRAE_BIN:-target/release/vqrae}
[[ -n ${VQRAE_BIN:-} ]] || cargo build --release --quiet
OUT=docs/results/tokenizer
ENC=.data/models/dinov2-small
CFG=configs/tokenizer-dinov2s.toml
TRAIN=configs/train/sweep-dinov2s.toml
DIMS=(32 64 128 256 384 768)
BEST_E=${BEST_E:-384}
SIZES=(1024 16384)
mkdir -p "$OUT" runs

# run NAME E K: train runs/table5-NAME with codebook width E and size K (kept if done)
train_one() {
    local name=table5-$1
    if [[ -f runs/$name/model/config.json ]]; then
        echo "keeping runs/$name" >&2
        return
    fi
    "$BIN" train-tokenizer --config "$CFG" --encoder "$ENC" --train "$TRAIN" --run "runs/$name" \
        --codebook-dim "$2" --codebook-size "$3" >"$OUT/$name-train.json"
}

eval_one() {
    local name=table5-$1
    "$BIN" eval-tokenizer --model "runs/$name/model" --mix "$TRAIN" --fd-encoder "$ENC" \
        --json "$OUT/$name-eval.json" >/dev/null
}

runs() {
    for e in "${DIMS[@]}"; do echo "e$e-k4096 $e 4096"; done
    for k in "${SIZES[@]}"; do echo "e$BEST_E-k$k $BEST_E $k"; done
}

part=${1:-all}
runs | while read -r name e k; do
    if [[ -s $OUT/table5-$name-eval.json ]]; then
        echo "keeping $OUT/table5-$name-eval.json (its run is done)" >&2
        continue
    fi
    [[ $part == eval ]] || train_one "$name" "$e" "$k"
    [[ $part == train ]] || eval_one "$name"
done
