#!/usr/bin/env bash
# Side-by-side benchmarks of vqrae-rs against the PyTorch reference (eager, CPU, the same
# weights and inputs), one row per process so that each row's peak memory is its own.
# For each preset: `vqrae bench init` writes the weights, fixed inputs and the Rust outputs;
# `reference.py check` checks PyTorch computes the same; then every row runs in Rust and in
# PyTorch, alternately; `scripts/perf/table.py` writes the ratio table.
#
#   scripts/bench.sh                          # both presets, 2 threads each
#   PRESETS=default THREADS=1 ROUNDS=3 scripts/bench.sh   # medians over 3 alternating rounds
#
# Needs torch + transformers + safetensors for the reference ($PYTHON, default ~/.venvs/ref;
# see scripts/perf/README.md). The default preset's gguf-decode rows (SmolLM2-135M-Instruct
# Q4_1, $GGUF) run against llama.cpp's llama-batched-bench instead (scripts/perf/llamacpp-setup.sh
# builds it, scripts/perf/llamacpp_reference.py runs it); without the binary or the GGUF they are
# skipped with a message. Not a test: nothing here asserts a speed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$HOME/.venvs/ref/bin/python}
OUT=${OUT:-docs/results/perf}
WORK=${WORK:-.bench}
THREADS=${THREADS:-2}
PRESETS=${PRESETS:-default paper}
# rows repeated in alternating rounds; the table reports medians (this machine's run-to-run
# spread is +-20-30% on single rows)
ROUNDS=${ROUNDS:-3}
BIN=${BIN:-target/release/vqrae}
GGUF=${GGUF:-${VQRAE_DATA:-.data}/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMACPP_BENCH=${LLAMACPP_DIR:-.bench/llamacpp}/build/bin/llama-batched-bench
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT"

rows() {
    case "$1" in
        default) cat <<'ROWS'
tok-encode 1
tok-encode 8
tok-encode 32
tok-decode 1
tok-decode 8
tok-decode 32
lm-prefill 1
lm-prefill 8
lm-decode 1
lm-decode 2
lm-decode 4
lm-decode 8
lm-decode 16
train-tok 32
train-lm 32
train-lora 4
lm-step-profile 1 rs-only
lm-step-profile 32 rs-only
gguf-decode 1 llamacpp
gguf-decode 16 llamacpp
ROWS
        ;;
        paper) cat <<'ROWS'
tok-encode 1
tok-encode 4
tok-decode 1
tok-decode 4
lm-prefill 1
lm-decode 1
lm-decode 16
train-tok 2
train-lm 4
lm-step-profile 1 rs-only
lm-step-profile 32 rs-only
ROWS
        ;;
    esac
}

for preset in $PRESETS; do
    dir="$WORK/$preset"
    # the default preset's dir also holds train-lora's frozen base (a dir from before that row
    # lacks it: written again)
    if [ ! -f "$dir/bench.json" ] || { [ "$preset" = default ] && [ ! -f "$dir/lora-base/adapters-init.safetensors" ]; }; then
        "$BIN" bench init --preset "$preset" --out "$dir"
    fi
    "$PY" scripts/perf/reference.py check --dir "$dir" | tee "$OUT/$preset-agreement.json"
    # the paper preset's rows take seconds each: two timed iterations, one round
    iters=0
    rounds=$ROUNDS
    [ "$preset" = paper ] && iters=2 && rounds=1
    log="$OUT/$preset-rows.jsonl"
    : > "$log"
    for _round in $(seq "$rounds"); do
    while read -r row batch only; do
        if [ "${only:-}" = llamacpp ]; then
            # quantized decode of a GGUF, llama-batched-bench's S_TG at -npp 128 -ntg 128: one
            # timed call each (after the untimed ones), the rounds repeat it
            if [ ! -x "$LLAMACPP_BENCH" ] || [ ! -f "$GGUF" ]; then
                echo "skipping $row $batch: needs $LLAMACPP_BENCH (scripts/perf/llamacpp-setup.sh)" \
                    "and $GGUF (scripts/setup-smollm2.sh)" >&2
                continue
            fi
            RAYON_NUM_THREADS=$THREADS "$BIN" bench run --dir "$dir" --row "$row" --batch "$batch" \
                --gguf "$GGUF" --iters 1 2>/dev/null | tail -n 1 | tee -a "$log"
            python3 scripts/perf/llamacpp_reference.py run --gguf "$GGUF" --batch "$batch" \
                --threads "$THREADS" --iters 1 --bin "$LLAMACPP_BENCH" | tail -n 1 | tee -a "$log"
            continue
        fi
        RAYON_NUM_THREADS=$THREADS "$BIN" bench run --dir "$dir" --row "$row" --batch "$batch" \
            --iters "$iters" 2>/dev/null | tail -n 1 | tee -a "$log"
        [ "${only:-}" = rs-only ] && continue
        "$PY" scripts/perf/reference.py run --dir "$dir" --row "${row//-/_}" --batch "$batch" \
            --threads "$THREADS" --iters "$iters" | tail -n 1 | tee -a "$log"
    done < <(rows "$preset")
    done
done
"$PY" scripts/perf/table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
