#!/usr/bin/env bash
# The headless browser the A/B rating-page test drives (tests/test_ab_browser.py): Debian's chromium and its
# chromedriver. Idempotent: does nothing when both binaries are there. Needs root (or sudo) and Debian's registry.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: need root to apt-get install chromium chromium-driver (or set CHROMIUM/CHROMEDRIVER)" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver
echo "installed $("$CHROMIUM" --version 2>/dev/null || echo chromium) and $("$CHROMEDRIVER" --version 2>/dev/null | head -n 1)"
