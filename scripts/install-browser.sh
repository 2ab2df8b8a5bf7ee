#!/usr/bin/env bash
# Installs what web/tests/browser.rs drives: Debian's headless-capable Chromium and its
# chromedriver (apt: chromium, chromium-driver), plus a font for legible screenshots.
# Idempotent: does nothing when both are already on PATH. `scripts/test.sh` calls it.
#
# About 120 MB of packages; ~15 s to install from the Debian mirror (plus `apt-get update` on a
# machine that never ran it). Other systems: install Chromium and chromedriver of the same
# version by hand, and point CHROMIUM / CHROMEDRIVER at them if they are not on PATH.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if { have chromium || have chromium-browser || [ -n "${CHROMIUM:-}" ]; } &&
    { have chromedriver || [ -n "${CHROMEDRIVER:-}" ]; }; then
    exit 0
fi

if ! have apt-get; then
    echo "install-browser: no apt-get here; install Chromium and chromedriver (same version) and" \
        "put them on PATH, or set CHROMIUM and CHROMEDRIVER" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then
        SUDO=(sudo)
    else
        echo "install-browser: apt needs root and there is no sudo" >&2
        exit 1
    fi
fi

packages=(chromium chromium-driver fonts-dejavu-core)
install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${packages[@]}"
}

echo "install-browser: installing ${packages[*]} with apt" >&2
start=$SECONDS
# the package lists may be missing or stale on a fresh machine: refresh them once on failure
if ! install; then
    "${SUDO[@]}" apt-get update -q
    install
fi
echo "install-browser: done in $((SECONDS - start)) s: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)" >&2
