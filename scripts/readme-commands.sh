#!/usr/bin/env bash
# Runs the commands the README (and the docs pages it links) show, as a reader would, so an
# example that fails as written fails the test command. `scripts/test.sh` calls it after the
# cargo tests.
#
#   scripts/readme-commands.sh [FILE.md ...]     default: README.md docs/DATA.md docs/TOKENIZER.md docs/LM.md
#
# What runs is chosen in the Markdown, by an HTML comment on the line before a fenced block:
#   <!-- readme-test: run -->            a ```sh block: run with bash -euo pipefail
#   <!-- readme-test: python -->         a ```python block: run by a venv's python with `openai`
#   <!-- readme-test: skip: REASON -->   not run, listed with its reason
# Every other ```sh block is listed as not run (training and benchmarks that take minutes to
# hours). Each block runs in a fresh temporary directory that looks like the repository root
# (its top-level entries symlinked there, the block's outputs written there), with `vqrae` on
# PATH: $VQRAE_BIN, else the debug binary `cargo test --workspace --all-targets` already built
# (the same build, so no extra compilation in CI). One server (`vqrae serve` on a free port)
# answers the curl and Python examples; the blocks' http://127.0.0.1:8080 is rewritten to it.
# The first failing block stops the script, printed with its output. Needs curl, jq, python3.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
files=("$@")
(( ${#files[@]} )) || files=(README.md docs/DATA.md docs/TOKENIZER.md docs/LM.md)

say() { echo "readme-commands: $*" >&2; }
die() { say "error: $*"; exit 1; }
for tool in curl jq python3; do
    command -v "$tool" >/dev/null 2>&1 && continue
    # a fresh Debian/Ubuntu machine may lack jq: install it as setup-data.sh installs its tools
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing $tool with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null; }
    fi
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (the README's examples use it)"
done

# --- the binary -----------------------------------------------------------------------------
if [[ -n "${VQRAE_BIN:-}" ]]; then
    bin="$(cd "$(dirname "$VQRAE_BIN")" && pwd)/$(basename "$VQRAE_BIN")"
else
    # the very build the tests use (a no-op after them); `cargo build -p vqrae` would resolve
    # features without the workspace's dev-dependencies and compile a second copy
    cargo test --workspace --all-targets --no-run --quiet
    target="$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    bin="$target/debug/vqrae"
fi
[[ -x "$bin" ]] || die "no vqrae binary at $bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/vqrae-readme.XXXXXX")"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bin"
ln -s "$bin" "$work/bin/vqrae"
export PATH="$work/bin:$PATH"
export VQRAE_DATA="${VQRAE_DATA:-$repo/.data}"

# --- the blocks: kind, source line, body (NUL-separated records) -----------------------------
extract() {
    python3 - "$@" <<'PY'
import re, sys
marker = re.compile(r"^<!--\s*readme-test:\s*(run|python|skip)(?::\s*(.*?))?\s*-->\s*$")
out = sys.stdout
for path in sys.argv[1:]:
    lines = open(path, encoding="utf-8").read().split("\n")
    i, pending = 0, None
    while i < len(lines):
        line = lines[i]
        m = marker.match(line.strip())
        if m:
            pending = (m.group(1), m.group(2) or "")
            i += 1
            continue
        fence = re.match(r"^(`{3,})\s*([A-Za-z0-9_+-]*)", line)
        if fence:
            ticks, lang = fence.group(1), fence.group(2)
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith(ticks):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                sys.exit(f"{path}:{start}: unclosed code fence")
            i += 1
            kind, reason = pending or ("unmarked", "")
            pending = None
            if kind == "run" and lang != "sh" or kind == "python" and lang != "python":
                sys.exit(f"{path}:{start}: readme-test: {kind} marks a ```{lang} block")
            if lang == "sh" or kind != "unmarked":
                text = "\n".join(body)
                out.write(f"{kind}\0{path}:{start}\0{reason}\0{text}\0")
            continue
        if line.strip():
            pending = None  # a marker applies to the block right after it
        i += 1
PY
}

# The complete shell command of FILE that ends on line N (bash -n tells where commands end).
command_at() {
    python3 - "$1" "$2" <<'PY'
import subprocess, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
target, start = int(sys.argv[2]), 2  # line 1 is the ERR trap
for end in range(start, len(lines) + 1):
    chunk = "\n".join(lines[start - 1:end])
    if lines[end - 1].rstrip().endswith("\\"):
        continue
    if subprocess.run(["bash", "-n"], input=chunk + "\n", text=True, capture_output=True).returncode:
        continue
    if start <= target <= end:
        print(chunk.strip("\n"))
        break
    start = end + 1
PY
}

blocks=()
while IFS= read -r -d '' field; do blocks+=("$field"); done < <(extract "${files[@]}")
(( ${#blocks[@]} % 4 == 0 )) || die "could not parse the blocks of ${files[*]}"

needs_server=0
for ((b = 0; b < ${#blocks[@]}; b += 4)); do
    case "${blocks[b]}" in
        python) needs_server=1 ;;
        run) [[ "${blocks[b + 3]}" == *"127.0.0.1:8080"* ]] && needs_server=1 ;;
    esac
done

# --- the server the curl / Python examples talk to -------------------------------------------
port=""
if (( needs_server )); then
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$bin" serve --port "$port" >"$work/serve.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; die "vqrae serve exited"; }
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/health" >/dev/null || { cat "$work/serve.log" >&2; die "vqrae serve did not come up on port $port"; }
    say "server: vqrae serve --port $port (pid $server_pid)"
fi

# --- the OpenAI client for the Python examples -------------------------------------------------
python_bin=""
prepare_python() {
    [[ -n "$python_bin" ]] && return 0
    local venv="$VQRAE_DATA/venv-readme"
    if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
        say "creating $venv with openai (PyPI)"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openai>=1.40,<3"
    fi
    python_bin="$venv/bin/python"
}

# --- run ----------------------------------------------------------------------------------------
ran=0 skipped=0 started=$SECONDS
for ((b = 0; b < ${#blocks[@]}; b += 4)); do
    kind="${blocks[b]}" where="${blocks[b + 1]}" reason="${blocks[b + 2]}" body="${blocks[b + 3]}"
    first="$(grep -m1 -v '^\s*\(#.*\)\?$' <<<"$body" || true)"
    case "$kind" in
        unmarked) say "not run  $where  ($first ...: unmarked, a long run)"; skipped=$((skipped + 1)); continue ;;
        skip)     say "not run  $where  ($reason)"; skipped=$((skipped + 1)); continue ;;
    esac
    [[ -n "$port" ]] && body="${body//127.0.0.1:8080/127.0.0.1:$port}"
    dir="$work/block-$b"
    mkdir -p "$dir"
    # the repository's top level, as a reader's working directory; outputs stay in $dir
    for entry in "$repo"/*; do
        name="$(basename "$entry")"
        [[ "$name" == target ]] || ln -s "$entry" "$dir/$name"
    done
    ln -s "$VQRAE_DATA" "$dir/.data"
    t0=$SECONDS
    if [[ "$kind" == python ]]; then
        prepare_python
        printf '%s\n' "$body" >"$dir/example.py"
        cmd=("$python_bin" example.py)
    else
        # the line of the failing command (its last line), to name the command, not only its block
        { printf '%s\n' "trap 'echo \$LINENO >\"$dir/failed-line\"' ERR"
          printf '%s\n' "$body"; } >"$dir/example.sh"
        cmd=(bash -euo pipefail example.sh)
    fi
    if ! (cd "$dir" && "${cmd[@]}") >"$dir/output" 2>&1; then
        say "FAILED   $where ($kind block):"
        sed 's/^/    /' <<<"$body" >&2
        say "its output:"
        sed 's/^/    /' "$dir/output" >&2
        if [[ -s "$dir/failed-line" ]]; then
            say "the command that failed:"
            command_at "$dir/example.sh" "$(cat "$dir/failed-line")" | sed 's/^/    /' >&2
        fi
        if [[ -n "$server_pid" ]]; then say "the server's log:"; tail -20 "$work/serve.log" | sed 's/^/    /' >&2; fi
        exit 1
    fi
    say "ok       $where  $((SECONDS - t0)) s  ($first ...)"
    head -n 12 "$dir/output" | cut -c1-160 | sed 's/^/    /' >&2
    ran=$((ran + 1))
done
say "$ran blocks ran, $skipped not run, in $((SECONDS - started)) s"
