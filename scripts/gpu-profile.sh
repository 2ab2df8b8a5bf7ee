#!/usr/bin/env bash
# Kernel-time profiles of the GPU rows where vqrae-rs trails PyTorch (docs/PERFORMANCE.md), both
# implementations, with Nsight Compute on the GPU machine: one timed call of each row inside the
# CUDA profiler's window (`--profile`; warm-up calls and weight loading stay outside), each
# kernel's GPU time (`gpu__time_duration.sum`; clocks and caches left alone), so that the sum of
# kernel time per call can be set against the call's wall time: the rest is the host's (launches,
# allocation, synchronisation). `scripts/perf/kernel_times.py DIR` summarises the CSVs.
#
# With the device tool, after scripts/build-cuda.sh:
#   run  command="scripts/gpu-profile.sh"  carry=[".gpu"]
# Reuses /tmp/bench-PRESET from scripts/gpu-bench.sh when the same command ran it first.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RES=${RES:-/tmp/gpu-profile}
PACK=gpu-profile
# shellcheck source=scripts/gpu-common.sh
source scripts/gpu-common.sh
DEADLINE=${DEADLINE:-240}
ROW_TIMEOUT=${ROW_TIMEOUT:-60}
IMPLS=${IMPLS:-rs py}
# "preset row batch", most telling first
ROWS=${ROWS:-"paper lm-prefill 16
paper tok-encode 32
paper lm-prefill 1
paper train-lm 16
default tok-encode 256"}
NCU=(ncu --profile-from-start off --metrics gpu__time_duration.sum --clock-control none
     --cache-control none --target-processes all)

while read -r preset row batch; do
    [ -z "$preset" ] && continue
    [ "$(elapsed)" -ge "$DEADLINE" ] && { log "deadline: $preset $row $batch and later skipped"; break; }
    dir=/tmp/bench-$preset
    if [ ! -f "$dir/bench.json" ]; then
        log "$preset: init"
        timeout 120 "$BIN" --device "$DEVICE" bench init --preset "$preset" --out "$dir" \
            >/dev/null 2>>"$RES/init.log" </dev/null || { log "$preset: init failed"; continue; }
    fi
    for impl in $IMPLS; do
        name="$preset-$row-$batch-$impl"
        log "$name"
        if [ "$impl" = rs ]; then
            cmd=("$BIN" --device "$DEVICE" bench run --dir "$dir" --row "$row" --batch "$batch"
                 --iters 1 --profile)
        else
            cmd=($PY scripts/perf/reference.py run --dir "$dir" --row "${row//-/_}"
                 --batch "$batch" --device "$DEVICE" --iters 1 --profile)
        fi
        timeout "$ROW_TIMEOUT" "${NCU[@]}" -f -o "/tmp/$name" "${cmd[@]}" \
            > "$RES/$name.out" 2>&1 </dev/null || log "$name: exit $?"
        [ -f "/tmp/$name.ncu-rep" ] && timeout 60 ncu --import "/tmp/$name.ncu-rep" --csv \
            --page raw --metrics gpu__time_duration.sum > "$RES/$name.csv" 2>>"$RES/import.log"
        pack
    done
done <<< "$ROWS"
log "done"
pack
