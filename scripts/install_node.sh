#!/bin/sh
# Install node (Debian's nodejs) for the browser decoder's tests (tests/test_js_decoder.py run
# its ES modules in node) if no node is on PATH. Works as root or with password-less sudo;
# without apt-get (or without the rights) it says so and exits 0: those tests are then
# skipped, everything else still runs. Only the distribution's package: no npm packages.
set -u
for name in node nodejs; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "node: found $(command -v "$name") ($("$name" --version))"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "node: apt-get not available; the JS decoder tests will be skipped"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "node: not root and no password-less sudo; the JS decoder tests will be skipped"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "node: apt-get update failed; trying the cached lists"
if $SUDO apt-get install -y -qq nodejs >/dev/null; then
    echo "node: installed $(command -v node || command -v nodejs)"
else
    echo "node: apt-get install nodejs failed; the JS decoder tests will be skipped"
fi
exit 0
