#!/usr/bin/env bash
# Reproduces the tokenizer figures of docs/RESULTS.md on CPU: trains, evaluates on the held-out
# test splits, and writes every report to docs/results/tokenizer/ (eval JSON, training summary
# JSON with its wall time, reconstruction grids, curves).
#
#   scripts/tokenizer-experiments.sh [PART ...]
#
# PARTS (default: all, in this order; later parts reuse earlier runs):
#   encoder   pretrain the own easy-VQA encoder            -> models/encoder-vit-s8-easyvqa
#   default   stage 1 + stage 2 (+ without distillation) + stage 2 continued
#             -> models/tokenizer-easyvqa (and the 600-step stage 2 -> models/tokenizer-easyvqa-s2)
#   ablation  the default stage 1's choices, one changed at a time (600 steps each)
#   fashion   encoder + stage 1 on Fashion-MNIST           -> models/tokenizer-fashion
#   dims      codebook dimension sweep at k = 1024 (150 steps each)
#   sizes     codebook size sweep at e = 256
#   vq        plain VQ, and SimVQ with a cosine lookup, at e = 256, k = 1024
#   strategy  end to end without distillation / one stage + distillation / two stages
#
# Runs go to runs/ (resumed if interrupted). VQRAE_BIN overrides the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${VQRAE_BIN:-target/debug/vqrae}
[[ -n ${VQRAE_BIN:-} ]] || cargo build --quiet
OUT=docs/results/tokenizer
mkdir -p "$OUT" runs models
ENC=models/encoder-vit-s8-easyvqa
CFG=configs/tokenizer-easyvqa.toml

# train NAME ARGS...: train-tokenizer into runs/NAME, summary (with seconds) to $OUT/NAME-train.json;
# a run whose model and summary exist is kept (delete runs/NAME to train it again)
train() {
    local name=$1
    shift
    if [[ -f runs/$name/model/config.json && -s $OUT/$name-train.json ]]; then
        echo "keeping runs/$name" >&2
        return
    fi
    "$BIN" train-tokenizer --run "runs/$name" "$@" >"$OUT/$name-train.json"
    "$BIN" plot --run "runs/$name" --keys loss,l2,perceptual,quant,distill,codes_used \
        -o "$OUT/$name-curves.png" >/dev/null
}

# evaluate NAME DATASET REFERENCE: held-out test figures of runs/NAME/model
evaluate() {
    "$BIN" eval-tokenizer --model "runs/$1/model" --dataset "$2" --reference "$3" \
        --json "$OUT/$1-eval.json" --grid "$OUT/$1-recon.png" >/dev/null
}

# probe NAME: linear probes (shape, colour) on the encoder of runs/NAME/model
probe() {
    "$BIN" probe --encoder "runs/$1/model" --dataset easy-vqa --resolution 64 \
        --features pretrained --json "$OUT/$1-probe.json" >/dev/null
}

part_encoder() {
    "$BIN" pretrain-encoder --encoder configs/encoder/vit-s8-easyvqa.toml \
        --train configs/train/pretrain-encoder.toml --dataset easy-vqa -o "$ENC" \
        >"$OUT/encoder-pretrain.json"
    "$BIN" probe --encoder "$ENC" --dataset easy-vqa --resolution 64 \
        --features pretrained,random --json "$OUT/encoder-probe.json" >/dev/null
}

part_default() {
    train easyvqa-s1 --config "$CFG" --encoder "$ENC" --train configs/train/stage1.toml
    evaluate easyvqa-s1 easy-vqa "$ENC"
    train easyvqa-s2 --init runs/easyvqa-s1/model --train configs/train/stage2.toml
    evaluate easyvqa-s2 easy-vqa "$ENC"
    train easyvqa-s2-no-distill --init runs/easyvqa-s1/model \
        --train configs/train/stage2-no-distill.toml
    evaluate easyvqa-s2-no-distill easy-vqa "$ENC"
    # stage 2 continued with a weak distillation to the original encoder: the default
    train easyvqa-s2-long --init runs/easyvqa-s2/model --teacher "$ENC" \
        --train configs/train/stage2-long.toml
    evaluate easyvqa-s2-long easy-vqa "$ENC"
    train easyvqa-s2-longer --init runs/easyvqa-s2-long/model --teacher "$ENC" \
        --train configs/train/stage2-longer.toml
    evaluate easyvqa-s2-longer easy-vqa "$ENC"
    for run in easyvqa-s1 easyvqa-s2 easyvqa-s2-no-distill easyvqa-s2-long easyvqa-s2-longer; do
        probe "$run"
    done
    # the 600-step stage 2 stays as the tokenizer the previous shipped LM was trained on
    rm -rf models/tokenizer-easyvqa-s2 models/tokenizer-easyvqa
    cp -r runs/easyvqa-s2/model models/tokenizer-easyvqa-s2
    cp -r runs/easyvqa-s2-longer/model models/tokenizer-easyvqa
}

part_ablation() {
    for variant in recipe no-restart perceptual quant-1; do
        train "ablation-$variant" --config "$CFG" --encoder "$ENC" \
            --train "configs/train/ablation-$variant.toml"
        evaluate "ablation-$variant" easy-vqa "$ENC"
    done
    train ablation-size-4096 --config "$CFG" --encoder "$ENC" \
        --train configs/train/ablation-recipe.toml --codebook-size 4096
    evaluate ablation-size-4096 easy-vqa "$ENC"
    # the background tint: an encoder pretrained with a patch-colour head, and where the tint is
    # lost (scripts/tokenizer_tint_probe.py)
    local enc=runs/encoder-colour
    [[ -f $enc/config.json ]] || "$BIN" pretrain-encoder --encoder configs/encoder/vit-s8-easyvqa.toml \
        --train configs/train/pretrain-encoder-colour.toml --dataset easy-vqa -o "$enc" \
        >"$OUT/encoder-colour-pretrain.json"
    train ablation-colour-encoder --config "$CFG" --encoder "$enc" \
        --train configs/train/ablation-recipe.toml
    evaluate ablation-colour-encoder easy-vqa "$enc"
    "${PYTHON:-python3}" scripts/tokenizer_tint_probe.py models/tokenizer-easyvqa-s2 models/tokenizer-easyvqa \
        runs/easyvqa-s2-no-distill/model runs/ablation-recipe/model \
        runs/ablation-colour-encoder/model runs/ablation-size-4096/model \
        --json "$OUT/tint-probe.json"
}

part_fashion() {
    local enc=models/encoder-vit-s4-fashion
    "$BIN" pretrain-encoder --encoder configs/encoder/vit-s4-fashion.toml \
        --train configs/train/pretrain-encoder-fashion.toml --dataset fashion-mnist \
        --limit 20000 -o "$enc" >"$OUT/fashion-encoder-pretrain.json"
    train fashion-s1 --config configs/tokenizer-fashion.toml --encoder "$enc" \
        --train configs/train/stage1-fashion.toml --dataset fashion-mnist --limit 20000
    evaluate fashion-s1 fashion-mnist "$enc"
    rm -rf models/tokenizer-fashion
    cp -r runs/fashion-s1/model models/tokenizer-fashion
}

part_dims() {
    for dim in 16 64 128 256 512; do
        train "sweep-dim-$dim" --config "$CFG" --encoder "$ENC" \
            --train configs/train/sweep-stage1.toml --codebook-dim "$dim"
        evaluate "sweep-dim-$dim" easy-vqa "$ENC"
    done
}

part_sizes() {
    for size in 256 4096; do
        train "sweep-size-$size" --config "$CFG" --encoder "$ENC" \
            --train configs/train/sweep-stage1.toml --codebook-size "$size"
        evaluate "sweep-size-$size" easy-vqa "$ENC"
    done
}

part_vq() {
    train sweep-vq --config "$CFG" --encoder "$ENC" --train configs/train/sweep-stage1.toml \
        --quantizer vq
    evaluate sweep-vq easy-vqa "$ENC"
    # not in the paper: SimVQ with a cosine lookup (ViT-VQGAN's l2-normalised codes)
    train sweep-cosine --config "$CFG" --encoder "$ENC" --train configs/train/sweep-stage1.toml \
        --l2-normalize
    evaluate sweep-cosine easy-vqa "$ENC"
}

part_strategy() {
    # 150 steps each: 75 + 75 for the two stages
    train strategy-stage1 --config "$CFG" --encoder "$ENC" --train configs/train/strategy-stage1.toml
    train strategy-two-stage --init runs/strategy-stage1/model \
        --train configs/train/strategy-stage2.toml
    train strategy-one-stage --config "$CFG" --encoder "$ENC" \
        --train configs/train/strategy-one-stage.toml
    train strategy-end-to-end --config "$CFG" --encoder "$ENC" \
        --train configs/train/strategy-end-to-end.toml
    for run in strategy-two-stage strategy-one-stage strategy-end-to-end; do
        evaluate "$run" easy-vqa "$ENC"
        probe "$run"
    done
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(encoder default ablation fashion dims sizes vq strategy)
for p in "${parts[@]}"; do
    echo "== $p ($(date -u +%H:%M:%S))" >&2
    "part_$p"
done
