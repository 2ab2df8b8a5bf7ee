#!/usr/bin/env bash
# Installs the two real captioned image sets of issue 24 into ${VQRAE_DATA:-<repo>/.data}:
#   emoji/      npm emoji-datasource-google 16.0.0 (`npm pack`): emoji.json (names, categories,
#               skin-tone variations), the 64x64 Noto PNGs (64/*.png, images Apache-2.0),
#               LICENSE (MIT, the emoji data), README.md (where the image licences are stated)
#   tuxpaint/   Debian bookworm tuxpaint-stamps-default 2022.06.04-1 (`apt-get download`, no root
#               install): stamps/**.png with the <name>.txt beside each (English description on
#               its first line, translations after), copyright (GPL-2), GPL-2 when the system has it
# Google's set rather than emoji-datasource-twitter's: the same emoji.json, but Apache-2.0 images
# (Twitter's are CC-BY 4.0, with attribution owed wherever an image or a derivative is shown).
# Only what the data crate reads is kept (no sounds, SVGs, sprite sheets or other sizes); the
# downloaded package is deleted once extracted. Each set is unpacked to a temporary sibling,
# checked, then renamed into place, and its INSTALLED file (package, version, sha256 of the
# downloaded package, file count) is written last: a second run finds it and only checks the file
# count. FORCE=1 reinstalls both. EMOJI_TGZ=<file> / TUXPAINT_DEB=<file> use a package already
# downloaded (its sha256 is checked all the same). scripts/setup-models.sh calls this.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
DATA="${VQRAE_DATA:-$REPO/.data}"
mkdir -p "$DATA"
DATA="$(cd "$DATA" && pwd)"

EMOJI_PKG="emoji-datasource-google"
EMOJI_VERSION="16.0.0"
EMOJI_TGZ_NAME="$EMOJI_PKG-$EMOJI_VERSION.tgz"
EMOJI_SHA256="fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"
EMOJI_PNGS=3786          # 1,911 emoji + 1,875 skin-tone variations, all with a Google image

STAMPS_PKG="tuxpaint-stamps-default"
STAMPS_VERSION="2022.06.04-1"
STAMPS_DEB_NAME="${STAMPS_PKG}_${STAMPS_VERSION}_all.deb"
STAMPS_SHA256="6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34"
STAMPS_PNGS=796          # 785 stamps + 11 "_mirror" images of them

say() { echo "setup-captioned: $*" >&2; }
die() { echo "setup-captioned: error: $*" >&2; exit 1; }

sha256() { sha256sum "$1" | cut -d' ' -f1; }
count_files() { find "$1" -type f -name "$2" 2>/dev/null | wc -l | tr -d ' '; }

# True when <dir>/INSTALLED names this package, version and sha256, and the PNG count matches.
installed() {
    local dir="$1" pkg="$2" version="$3" sha="$4" pngs="$5"
    local rec="$dir/INSTALLED"
    [[ -f "$rec" && -z "${FORCE:-}" ]] || return 1
    grep -qx "package=$pkg" "$rec" && grep -qx "version=$version" "$rec" \
        && grep -qx "sha256=$sha" "$rec" && [[ "$(count_files "$dir" '*.png')" -eq "$pngs" ]]
}

# Checks a downloaded package's sha256; deletes it and fails on a mismatch (unless it is the
# user's own file, which is kept).
check_sha() {
    local file="$1" want="$2" ours="$3" got
    got="$(sha256 "$file")"
    [[ "$got" == "$want" ]] && return 0
    if [[ "$ours" == 1 ]]; then rm -f "$file"; fi
    die "$(basename "$file") has sha256 $got, expected $want (a changed upstream package, or another file?)"
}

# Runs a command as root: directly, or through sudo when not root and sudo exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

write_record() {
    local dir="$1" pkg="$2" version="$3" sha="$4" source="$5"
    printf 'package=%s\nversion=%s\nsha256=%s\nsource=%s\npngs=%s\ntxts=%s\n' \
        "$pkg" "$version" "$sha" "$source" "$(count_files "$dir" '*.png')" \
        "$(count_files "$dir" '*.txt')" >"$dir/INSTALLED"
}

# The temporary folders of this run, removed on every exit (an interrupted run leaves no
# half-unpacked set behind; the one installed before stays as it was until the final rename).
WORK=""
cleanup() {
    if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
    rm -rf "$DATA/.emoji.tmp.$$" "$DATA/.tuxpaint.tmp.$$"
}
trap cleanup EXIT

install_emoji() {
    local dest="$DATA/emoji"
    if installed "$dest" "$EMOJI_PKG" "$EMOJI_VERSION" "$EMOJI_SHA256" "$EMOJI_PNGS"; then
        say "$dest already installed ($EMOJI_PKG $EMOJI_VERSION, recorded sha256 matches; FORCE=1 to redo)"
        return 0
    fi
    local tgz ours=0
    if [[ -n "${EMOJI_TGZ:-}" ]]; then
        tgz="$EMOJI_TGZ"
    else
        if ! command -v npm >/dev/null 2>&1; then
            say "npm not found; installing Debian's npm (as setup-data.sh installs pip)"
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null 2>&1 \
                || die "npm is needed to fetch $EMOJI_PKG (apt-get install npm, as root), or set EMOJI_TGZ"
        fi
        say "downloading $EMOJI_PKG@$EMOJI_VERSION (~74 MB) with npm pack"
        (cd "$WORK" && npm pack --silent "$EMOJI_PKG@$EMOJI_VERSION" >/dev/null) \
            || die "npm pack $EMOJI_PKG@$EMOJI_VERSION failed (network? registry?)"
        tgz="$WORK/$EMOJI_TGZ_NAME"
        ours=1
    fi
    [[ -f "$tgz" ]] || die "$tgz not found"
    check_sha "$tgz" "$EMOJI_SHA256" "$ours"
    local tmp="$DATA/.emoji.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$WORK/emoji"
    tar -xzf "$tgz" -C "$WORK/emoji" package/emoji.json package/LICENSE package/README.md \
        package/package.json package/img/google/64 || die "unpacking $tgz failed"
    mkdir -p "$tmp"
    mv "$WORK/emoji/package/img/google/64" "$tmp/64"
    mv "$WORK/emoji/package/"{emoji.json,LICENSE,README.md,package.json} "$tmp/"
    [[ "$(count_files "$tmp/64" '*.png')" -eq "$EMOJI_PNGS" ]] \
        || { rm -rf "$tmp"; die "$tgz holds $(count_files "$tmp/64" '*.png') 64 px PNGs, expected $EMOJI_PNGS"; }
    if [[ "$ours" == 1 ]]; then rm -f "$tgz"; fi
    write_record "$tmp" "$EMOJI_PKG" "$EMOJI_VERSION" "$EMOJI_SHA256" "npm pack $EMOJI_PKG@$EMOJI_VERSION"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    say "installed $dest: $(count_files "$dest" '*.png') PNGs, $(du -sh "$dest" | cut -f1)"
}

# The stamps' files of a .deb, extracted under <out>: with dpkg-deb where there is one, else
# with ar and tar (the data member is data.tar.xz in bookworm's package; .gz/.zst handled too).
extract_deb() {
    local deb="$1" out="$2"
    if command -v dpkg-deb >/dev/null 2>&1; then
        dpkg-deb --fsys-tarfile "$deb" >"$out.tar" || return 1
    else
        command -v ar >/dev/null 2>&1 || die "dpkg-deb or ar (binutils) is needed to unpack $deb"
        local member
        member="$(ar t "$deb" | grep '^data\.tar' | head -1)"
        case "$member" in
            data.tar.xz) ar p "$deb" "$member" | xz -dc >"$out.tar" ;;
            data.tar.gz) ar p "$deb" "$member" | gzip -dc >"$out.tar" ;;
            data.tar.zst) ar p "$deb" "$member" | zstd -dc >"$out.tar" ;;
            *) die "$deb has no data.tar member I can unpack ($member)" ;;
        esac || return 1
    fi
    mkdir -p "$out"
    tar -xf "$out.tar" -C "$out" --wildcards './usr/share/doc/tuxpaint-stamps-default/copyright' \
        './usr/share/tuxpaint/stamps/*.png' './usr/share/tuxpaint/stamps/*.txt' || return 1
    rm -f "$out.tar"
}

install_stamps() {
    local dest="$DATA/tuxpaint"
    if installed "$dest" "$STAMPS_PKG" "$STAMPS_VERSION" "$STAMPS_SHA256" "$STAMPS_PNGS"; then
        say "$dest already installed ($STAMPS_PKG $STAMPS_VERSION, recorded sha256 matches; FORCE=1 to redo)"
        return 0
    fi
    local deb ours=0
    if [[ -n "${TUXPAINT_DEB:-}" ]]; then
        deb="$TUXPAINT_DEB"
    else
        command -v apt-get >/dev/null 2>&1 || die "apt-get is needed to fetch $STAMPS_PKG, or set TUXPAINT_DEB to its .deb"
        say "downloading $STAMPS_PKG=$STAMPS_VERSION (~161 MB) with apt-get download"
        # apt-get download writes into the current folder; _apt may not read $WORK (a warning only).
        if ! (cd "$WORK" && apt-get download -qq "$STAMPS_PKG=$STAMPS_VERSION" >/dev/null 2>&1); then
            say "apt-get download failed; running apt-get update and retrying"
            as_root apt-get update -qq >/dev/null 2>&1 || true
            (cd "$WORK" && apt-get download -qq "$STAMPS_PKG=$STAMPS_VERSION" >/dev/null) \
                || die "apt-get download $STAMPS_PKG=$STAMPS_VERSION failed (needs Debian bookworm's archive; or set TUXPAINT_DEB)"
        fi
        deb="$WORK/$STAMPS_DEB_NAME"
        ours=1
    fi
    [[ -f "$deb" ]] || die "$deb not found"
    check_sha "$deb" "$STAMPS_SHA256" "$ours"
    local x="$WORK/deb"
    extract_deb "$deb" "$x" || die "unpacking $deb failed"
    if [[ "$ours" == 1 ]]; then rm -f "$deb"; fi
    local tmp="$DATA/.tuxpaint.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    mv "$x/usr/share/tuxpaint/stamps" "$tmp/stamps"
    cp "$x/usr/share/doc/tuxpaint-stamps-default/copyright" "$tmp/copyright"
    if [[ -f /usr/share/common-licenses/GPL-2 ]]; then cp /usr/share/common-licenses/GPL-2 "$tmp/GPL-2"; fi
    # A .txt with no PNG beside it describes an SVG-only stamp: not used, not kept.
    local svg_only=0 t
    while IFS= read -r -d '' t; do
        [[ -f "${t%.txt}.png" ]] || { rm -f "$t"; svg_only=$((svg_only + 1)); }
    done < <(find "$tmp/stamps" -type f -name '*.txt' -print0)
    find "$tmp/stamps" -type d -empty -delete
    [[ "$(count_files "$tmp" '*.png')" -eq "$STAMPS_PNGS" ]] \
        || { rm -rf "$tmp"; die "$deb holds $(count_files "$tmp" '*.png') stamp PNGs, expected $STAMPS_PNGS"; }
    write_record "$tmp" "$STAMPS_PKG" "$STAMPS_VERSION" "$STAMPS_SHA256" \
        "apt-get download $STAMPS_PKG=$STAMPS_VERSION (Debian bookworm)"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    say "installed $dest: $(count_files "$dest" '*.png') PNGs, $(count_files "$dest" '*.txt') descriptions ($svg_only SVG-only stamps' descriptions not kept), $(du -sh "$dest" | cut -f1)"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/setup-captioned.XXXXXX")"
chmod 755 "$WORK"
install_emoji
install_stamps
echo "captioned images in $DATA: emoji $(count_files "$DATA/emoji/64" '*.png') PNGs ($EMOJI_PKG $EMOJI_VERSION), tuxpaint $(count_files "$DATA/tuxpaint/stamps" '*.png') PNGs ($STAMPS_PKG $STAMPS_VERSION), $(du -shc "$DATA/emoji" "$DATA/tuxpaint" | tail -1 | cut -f1) in all"
