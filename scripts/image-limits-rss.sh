#!/usr/bin/env bash
# Peak RSS of hostile image uploads (docs/SERVING.md, "Image limits").
#
#   scripts/image-limits-rss.sh [VQRAE_BINARY]     (default target/release/vqrae)
#
# Writes the files (data/examples/decode_rss.rs) to $DIR (default /tmp/hostile), then:
#  1. `vqrae tokenize` on each under /usr/bin/time -v;
#  2. one `vqrae serve` (default config), each file POSTed once to /v1/images/tokenize, the
#     server's VmHWM after each;
#  3. 32 uploads of a 4096 x 4096 PNG, 16 at a time, with max_concurrent_decodes 1, 2 and 16
#     (skipped for a binary that predates the setting).
# Everything runs under `prlimit --as` (8 GiB) so that a binary without the limits aborts
# instead of swapping the machine. Needs curl, python3, /usr/bin/time.
set -euo pipefail
BIN=${1:-target/release/vqrae}
DIR=${DIR:-/tmp/hostile}
CAP=$((8 * 1024 * 1024 * 1024))
MODEL=models/vqrae-easyvqa
cargo run -q --release -p vqrae-data --example decode_rss -- write "$DIR" >/dev/null
FILES="gif-64x64-frame-11000x11000.gif rgb16-4096x4096.png wide-4194304x4.png wide-16777216x1.png wide-67108864x1.png"

echo "== CLI: $BIN tokenize"
for f in $FILES; do
    out=$(prlimit --as=$CAP /usr/bin/time -v "$BIN" tokenize --model $MODEL/tokenizer "$DIR/$f" 2>&1 || true)
    verdict=$(grep -q '"codes"' <<<"$out" && echo answered || grep -m1 -E '^Error|memory allocation' <<<"$out" || echo failed)
    echo "$f: ${verdict:0:120}; peak RSS $(grep 'Maximum resident' <<<"$out" | awk '{print $NF}') kB"
done

body() { python3 -c "import base64,json,sys; print(json.dumps({'image': base64.b64encode(open(sys.argv[1],'rb').read()).decode()}))" "$1" >"$2"; }

serve() { # PORT [CONFIG] -> PID in $PID once /health answers
    local args=(serve --port "$1")
    [ -n "${2:-}" ] && args+=(--config "$2")
    prlimit --as=$CAP "$BIN" "${args[@]}" >"/tmp/image-limits-$1.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 120); do curl -sf "localhost:$1/health" >/dev/null && return; sleep 0.5; done
    echo "server did not start: /tmp/image-limits-$1.log"
    kill "$PID" 2>/dev/null || true
    return 1
}
hwm() { grep VmHWM "/proc/$PID/status" 2>/dev/null | awk '{print $2" kB"}' || echo "(process gone)"; }

echo "== server: POST /v1/images/tokenize, one after another"
serve 18311 || exit 1
echo "idle: $(hwm)"
for f in $FILES; do
    body "$DIR/$f" /tmp/image-limits-body.json
    code=$(curl -s -o /tmp/image-limits-resp.json -w '%{http_code}' -m 120 -H 'content-type: application/json' \
        --data-binary @/tmp/image-limits-body.json localhost:18311/v1/images/tokenize || true)
    echo "$f: HTTP $code; server peak RSS $(hwm)"
done
kill "$PID" 2>/dev/null || true
wait "$PID" 2>/dev/null || true

echo "== server: 32 uploads of rgba8-4096x4096.png, 16 at a time"
body "$DIR/rgba8-4096x4096.png" /tmp/image-limits-body.json
for n in 1 2 16; do
    printf '[limits]\nmax_concurrent_decodes = %s\n' $n >/tmp/image-limits-$n.toml
    serve $((18320 + n)) /tmp/image-limits-$n.toml || { echo "max_concurrent_decodes=$n: not supported, skipped"; continue; }
    start=$(date +%s.%N)
    codes=$(seq 32 | xargs -P 16 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H 'content-type: application/json' \
        --data-binary @/tmp/image-limits-body.json localhost:$((18320 + n))/v1/images/tokenize | sort | uniq -c | tr -s ' \n' ' ')
    end=$(date +%s.%N)
    echo "max_concurrent_decodes=$n: [$codes] in $(python3 -c "print(round($end - $start, 1))") s; peak RSS $(hwm)"
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
done
