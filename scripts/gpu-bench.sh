#!/usr/bin/env bash
# The benchmark set on the GPU machine (one H200; see docs/GPU.md), as one prepared run:
# the machine's ceilings, then for each preset the agreement check and every row in vqrae-rs
# (CUDA build, bf16 inference, f32 training) and in PyTorch on the same weights, alternately.
# Results go to $RES and, packed after every row (the device tool brings back at most 8 files,
# and what a killed run has written still comes back), to $OUT/gpu-bench.tgz;
# `scripts/perf/gpu_report.py DIR` turns them into docs/PERFORMANCE.md's GPU tables afterwards.
#
# Here, first:  scripts/build-cuda.sh         (writes .gpu/vqrae.xz, ~10 MB)
# Then, with the device tool:  run  command="scripts/gpu-bench.sh"  carry=[".gpu"]  timeout_s=590
#
# The device tool gives each issue 15 minutes in all, so the run watches the clock: no new row
# starts after DEADLINE seconds (default 480), the most important rows come first, and each row
# has its own timeout. GPU timings are steady, so each row times ~SECONDS (default 1) of calls.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RES=${RES:-/tmp/gpu-bench}
PACK=gpu-bench
# shellcheck source=scripts/gpu-common.sh
source scripts/gpu-common.sh
DEADLINE=${DEADLINE:-480}
SECONDS_PER_ROW=${SECONDS_PER_ROW:-1}
ROW_TIMEOUT=${ROW_TIMEOUT:-60}
PRESETS=${PRESETS:-default paper}
ONLY=${ONLY:-}             # an extended regex: only the rows ("row batch") that match it
SKIP_CHECK=${SKIP_CHECK:-} # 1: no agreement check (it was run before on the same weights)
RS_ONLY=${RS_ONLY:-}       # 1: vqrae-rs rows only (after a change, against an earlier PyTorch run)

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv > "$RES/gpu.csv" 2>&1
# device memory in use, every 100 ms, for each row's peak (neither candle nor the reference's
# caching allocator reports the same thing itself); `marks.tsv` has each row's start and end
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 100 \
    > "$RES/gpumem.csv" 2>/dev/null &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null' EXIT
mark() { printf '%s\t%s\n' "$(date '+%Y/%m/%d %H:%M:%S.%3N')" "$*" >> "$RES/marks.tsv"; }

log "ceilings"
timeout 90 $PY scripts/perf/ceilings.py --device $DEVICE > "$RES/ceilings.json" 2> "$RES/ceilings.log"
cat "$RES/ceilings.json"

# most important first: decode (the paper's use), then prefill, the tokenizer, training
rows() {
    case "$1" in
        default) printf '%s\n' "lm-decode 1" "lm-decode 16" "lm-step-profile 1 rs-only" \
            "lm-step-profile 32 rs-only" "lm-prefill 1" "lm-prefill 64" "tok-encode 1" \
            "tok-encode 256" "tok-decode 1" "tok-decode 256" "train-tok 64" "train-lm 64" \
            "lm-decode 64" ;;
        paper) printf '%s\n' "lm-decode 1" "lm-decode 16" "lm-step-profile 1 rs-only" \
            "lm-step-profile 32 rs-only" "lm-prefill 1" "lm-prefill 16" "tok-encode 1" \
            "tok-encode 32" "tok-decode 1" "tok-decode 32" "train-tok 16" "train-lm 16" ;;
    esac
}

one() {  # impl row batch dir log
    local impl=$1 row=$2 batch=$3 dir=$4 rowlog=$5
    mark "start $preset $impl $row $batch"
    if [ "$impl" = rs ]; then
        timeout "$ROW_TIMEOUT" "$BIN" --device $DEVICE bench run --dir "$dir" --row "$row" \
            --batch "$batch" --seconds "$SECONDS_PER_ROW" 2>>"$RES/$preset-rs.log" \
            </dev/null | tail -n 1 | tee -a "$rowlog"
    else
        timeout "$ROW_TIMEOUT" $PY scripts/perf/reference.py run --dir "$dir" \
            --row "${row//-/_}" --batch "$batch" --device $DEVICE --seconds "$SECONDS_PER_ROW" \
            2>>"$RES/$preset-py.log" | tail -n 1 | tee -a "$rowlog"
    fi
    mark "end $preset $impl $row $batch"
}

for preset in $PRESETS; do
    [ "$(elapsed)" -ge "$DEADLINE" ] && { log "deadline: $preset skipped"; continue; }
    dir=/tmp/bench-$preset
    log "$preset: init"
    if ! timeout 120 "$BIN" --device $DEVICE bench init --preset "$preset" --out "$dir" \
        2>"$RES/$preset-init.log" </dev/null; then
        log "$preset: bench init failed"; tail -n 20 "$RES/$preset-init.log"; continue
    fi
    cp "$dir/bench.json" "$RES/$preset-bench.json"
    if [ -z "$SKIP_CHECK" ]; then
        log "$preset: agreement (f32 on the GPU)"
        timeout 120 $PY scripts/perf/reference.py check --dir "$dir" --device $DEVICE \
            > "$RES/$preset-agreement.json" 2> "$RES/$preset-agreement.log" </dev/null
        tail -c 600 "$RES/$preset-agreement.json"; pack
    fi
    rowlog="$RES/$preset-rows.jsonl"
    : > "$rowlog"
    while read -r row batch only; do
        [ "$(elapsed)" -ge "$DEADLINE" ] && { log "deadline: $preset $row $batch and later skipped"; break; }
        log "$preset $row $batch"
        one rs "$row" "$batch" "$dir" "$rowlog"
        pack
        [ "${only:-}" = rs-only ] || [ -n "$RS_ONLY" ] && continue
        one py "$row" "$batch" "$dir" "$rowlog"
        pack
    done < <(rows "$preset" | grep -E "${ONLY:-.}")
done
$PY scripts/perf/table.py "$RES" > "$RES/table.md" 2>&1
cat "$RES/table.md"
log "done"
pack
