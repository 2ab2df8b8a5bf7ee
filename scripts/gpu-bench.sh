#!/usr/bin/env bash
# The benchmark set on the GPU machine (one H200; see ../shared/gpu.md), as one prepared run:
# the machine's ceilings, then for each preset the agreement check and every row in vqrae-rs
# (CUDA build, bf16 inference, f32 training) and in PyTorch on the same weights, alternately.
# Results go to $OUT (the device tool's output folder).
#
# Here, first:  scripts/build-cuda.sh         (writes .gpu/vqrae.xz, ~6 MB)
# Then, with the device tool:  run  command="scripts/gpu-bench.sh"  carry=[".gpu"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH=$SP/nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
BIN=/tmp/vqrae-cuda
xz -dc .gpu/vqrae.xz > "$BIN"
chmod +x "$BIN"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv" || true
python3 scripts/perf/ceilings.py --device cuda | tee "$OUT/ceilings.json"

rows() {
    case "$1" in
        default) printf '%s\n' "tok-encode 1" "tok-encode 64" "tok-encode 256" "tok-decode 1" \
            "tok-decode 64" "tok-decode 256" "lm-prefill 1" "lm-prefill 64" "lm-decode 1" \
            "lm-decode 16" "lm-decode 64" "train-tok 64" "train-lm 64" \
            "lm-step-profile 1 rs-only" "lm-step-profile 32 rs-only" ;;
        paper) printf '%s\n' "tok-encode 1" "tok-encode 32" "tok-decode 1" "tok-decode 32" \
            "lm-prefill 1" "lm-prefill 16" "lm-decode 1" "lm-decode 16" "train-tok 16" \
            "train-lm 16" "lm-step-profile 1 rs-only" "lm-step-profile 32 rs-only" ;;
    esac
}

for preset in default paper; do
    dir=/tmp/bench-$preset
    "$BIN" --device cuda bench init --preset "$preset" --out "$dir" 2>"$OUT/$preset-init.log"
    python3 scripts/perf/reference.py check --dir "$dir" --device cuda \
        | tee "$OUT/$preset-agreement.json" || true
    log="$OUT/$preset-rows.jsonl"
    : > "$log"
    while read -r row batch only; do
        timeout 120 "$BIN" --device cuda bench run --dir "$dir" --row "$row" --batch "$batch" \
            2>>"$OUT/$preset-rs.log" | tail -n 1 | tee -a "$log" || true
        [ "${only:-}" = rs-only ] && continue
        timeout 120 python3 scripts/perf/reference.py run --dir "$dir" --row "${row//-/_}" \
            --batch "$batch" --device cuda 2>>"$OUT/$preset-py.log" | tail -n 1 | tee -a "$log" || true
    done < <(rows "$preset")
done
python3 scripts/perf/table.py "$OUT" > "$OUT/table.md" || true
