#!/bin/sh
# Install Debian's chromium for the browser test (tests/test_browser.py) if no Chromium is on
# PATH. Works as root or with password-less sudo; without apt-get (or without the rights) it
# says so and exits 0: the browser test is then skipped, everything else still runs.
set -u
for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "chromium: found $(command -v "$name")"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: apt-get not available; the browser test will be skipped"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "chromium: not root and no password-less sudo; the browser test will be skipped"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "chromium: apt-get update failed; trying the cached lists"
if $SUDO apt-get install -y -qq chromium >/dev/null; then
    echo "chromium: installed $(command -v chromium)"
else
    echo "chromium: apt-get install chromium failed; the browser test will be skipped"
fi
exit 0
