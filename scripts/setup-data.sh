#!/usr/bin/env bash
# Installs the data sets vqrae-rs uses into the data root, ${VQRAE_DATA:-<repo>/.data}:
#   easy-vqa/       easy-VQA 1.0 (PyPI wheel `easy-vqa`, its easy_vqa/data/ folder)
#   fashion-mnist/  symlink to /usr/share/datasets/fashion-mnist (Debian dataset-fashion-mnist)
# Idempotent: a second run only checks and prints the one-line summary. The DINOv2-small that
# `vqrae features` uses is not installed here: scripts/convert-dinov2.sh converts it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
root="${VQRAE_DATA:-$repo/.data}"
mkdir -p "$root"
root="$(cd "$root" && pwd)"

EASY_VQA_VERSION=1.0
FASHION_SYS=/usr/share/datasets/fashion-mnist
FASHION_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
               t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

die() { echo "setup-data: error: $*" >&2; exit 1; }
say() { echo "setup-data: $*" >&2; }

# Runs a command as root: directly, or through sudo when not root and sudo exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

# apt-get install, with one `apt-get update` and retry if the first attempt fails
# (a fresh machine often has no package lists).
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
    say "apt-get install $* failed; running apt-get update and retrying"
    as_root apt-get update -qq >/dev/null 2>&1 || true
    as_root apt-get install -y -qq "$@" >/dev/null
}

count_png() { find "$1" -maxdepth 1 -name '*.png' 2>/dev/null | wc -l | tr -d ' '; }

easy_vqa_complete() {
    local d="$root/easy-vqa"
    [ -f "$d/answers.txt" ] && [ -f "$d/train/questions.json" ] && [ -f "$d/test/questions.json" ] \
        && [ "$(count_png "$d/train/images")" -eq 4000 ] && [ "$(count_png "$d/test/images")" -eq 1000 ]
}

install_easy_vqa() {
    easy_vqa_complete && return 0
    command -v python3 >/dev/null 2>&1 || apt_install python3 || die "python3 is needed to fetch easy-VQA"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip || die "pip is needed to fetch easy-VQA (install python3-pip)"
    fi
    local cache="$root/cache"
    local wheel="$cache/easy_vqa-$EASY_VQA_VERSION-py3-none-any.whl"
    mkdir -p "$cache"
    if [ ! -f "$wheel" ]; then
        say "downloading easy-vqa==$EASY_VQA_VERSION from PyPI"
        python3 -m pip download --quiet --no-deps --disable-pip-version-check \
            "easy-vqa==$EASY_VQA_VERSION" -d "$cache" \
            || die "pip download easy-vqa==$EASY_VQA_VERSION failed (network? proxy?)"
        [ -f "$wheel" ] || die "pip did not produce $wheel"
    fi
    # Unpack next to the target and rename into place, so an interrupted run never leaves
    # a half-filled easy-vqa/ that looks installed.
    local tmp="$root/.easy-vqa.tmp.$$"
    rm -rf "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    python3 - "$wheel" "$tmp" <<'PY'
import os, sys, zipfile
wheel, dst = sys.argv[1], sys.argv[2]
prefix = "easy_vqa/data/"
n = 0
with zipfile.ZipFile(wheel) as z:
    for m in z.infolist():
        if not m.filename.startswith(prefix) or m.is_dir():
            continue
        rel = os.path.normpath(m.filename[len(prefix):])
        if rel.startswith("..") or os.path.isabs(rel):
            sys.exit(f"unsafe path in wheel: {m.filename}")
        out = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(m) as src, open(out, "wb") as f:
            f.write(src.read())
        n += 1
if n == 0:
    sys.exit(f"{wheel} has no {prefix} folder")
PY
    rm -rf "$root/easy-vqa"
    mv "$tmp" "$root/easy-vqa"
    trap - EXIT
    easy_vqa_complete || die "easy-VQA unpacked to $root/easy-vqa but is incomplete (expected 4000/1000 images)"
    say "installed easy-VQA into $root/easy-vqa"
}

fashion_complete() {
    local f
    for f in "${FASHION_FILES[@]}"; do [ -s "$1/$f" ] || return 1; done
}

install_fashion_mnist() {
    local link="$root/fashion-mnist"
    # A complete folder (a user's copy, or our symlink) is kept as it is.
    fashion_complete "$link" && return 0
    if ! fashion_complete "$FASHION_SYS"; then
        say "installing Debian package dataset-fashion-mnist"
        apt_install dataset-fashion-mnist \
            || die "could not install dataset-fashion-mnist with apt-get (need root or sudo on Debian/Ubuntu); or put ${FASHION_FILES[*]} in $link"
        fashion_complete "$FASHION_SYS" \
            || die "dataset-fashion-mnist is installed but $FASHION_SYS lacks ${FASHION_FILES[*]}"
    fi
    # Replace a stale symlink; never delete a real folder someone put there.
    if [ -L "$link" ]; then
        rm -f "$link"
    elif [ -e "$link" ]; then
        die "$link exists but lacks some of ${FASHION_FILES[*]}; complete it or remove it"
    fi
    ln -s "$FASHION_SYS" "$link"
    say "linked $link -> $FASHION_SYS"
}

install_easy_vqa
install_fashion_mnist

fm="$root/fashion-mnist"
[ -L "$fm" ] && fm_where=" -> $(readlink "$fm")" || fm_where=""
echo "vqrae data in $root: easy-vqa $(count_png "$root/easy-vqa/train/images")/$(count_png "$root/easy-vqa/test/images") images, fashion-mnist ${#FASHION_FILES[@]} files$fm_where"
# The converted DINOv2-small is not a data set and needs a venv and the repository's converter:
# say how to get it rather than leave `vqrae features` to find out.
[ -f "$root/models/dinov2-small/model.safetensors" ] \
    || say "DINOv2-small (vqrae features, probe) is a separate step: scripts/convert-dinov2.sh (PyPI, ~90 MB)"
