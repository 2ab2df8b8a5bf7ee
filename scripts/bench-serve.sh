#!/usr/bin/env bash
# Load benchmark of `vqrae serve` (docs/SERVING.md): starts the server twice on the same model,
# batching off (max_batch 1) and on (max_batch 16), and loads both with `vqrae bench-serve`:
# text to image (n = 1) and a question about an image, at each concurrency. The second run
# reports its gain over the first. Tables go to stdout and $OUT/report.md, JSON to $OUT/.
# Takes ~2.5 min per round with the defaults on 2 CPU cores.
#
#   scripts/bench-serve.sh                       # models/vqrae-easyvqa, 1,8,32, 256 requests
#   MODEL=runs/lm-joint/model REQUESTS=64 scripts/bench-serve.sh
#
# Environment: MODEL, CONCURRENCY, REQUESTS, ROUNDS (repeats of the off/on pair, to see the
# noise when other jobs share the machine), PORT, OUT, and RAYON_NUM_THREADS (the server's
# compute threads; 1 when another job shares the cores). Builds the dev profile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODEL=${MODEL:-models/vqrae-easyvqa}
CONCURRENCY=${CONCURRENCY:-1,8,32}
REQUESTS=${REQUESTS:-256}
ROUNDS=${ROUNDS:-1}
PORT=${PORT:-18181}
OUT=${OUT:-target/bench-serve}
BIN=target/debug/vqrae

[ -f "$MODEL/unified.json" ] || {
    echo "bench-serve: no model at $MODEL (set MODEL=<a directory written by vqrae train-lm>)" >&2
    exit 1
}
cargo build -q --bin vqrae
mkdir -p "$OUT"

# a real easy-VQA test image when the data is installed, else bench-serve draws one
IMAGE_ARGS=()
img="${VQRAE_DATA:-.data}/easy-vqa/test/images/0.png"
if [ -f "$img" ]; then IMAGE_ARGS=(--image "$img"); fi

server=""
stop_server() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
    fi
}
trap stop_server EXIT

{
    echo "# vqrae bench-serve, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "model $MODEL; $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), CPU only;" \
        "server RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-unset}; $REQUESTS requests per row; image ${IMAGE_ARGS[1]:-drawn}"
    echo
} > "$OUT/report.md"

for round in $(seq 1 "$ROUNDS"); do
    for batch in 1 16; do
        RUST_LOG=warn "$BIN" serve --model "$MODEL" --port "$PORT" --max-batch "$batch" \
            > "$OUT/serve-batch$batch.log" 2>&1 &
        server=$!
        baseline=()
        [ "$batch" -gt 1 ] && baseline=(--baseline "$OUT/round$round-batch1.json")
        "$BIN" bench-serve --url "http://127.0.0.1:$PORT" --wait-s 120 \
            --concurrency "$CONCURRENCY" --requests "$REQUESTS" "${IMAGE_ARGS[@]}" \
            --label "round $round, max_batch $batch" --json "$OUT/round$round-batch$batch.json" \
            "${baseline[@]}" | tee -a "$OUT/report.md"
        echo >> "$OUT/report.md"
        stop_server
    done
done
echo "bench-serve: $OUT/report.md" >&2
