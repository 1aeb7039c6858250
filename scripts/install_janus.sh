#!/bin/sh
# Install Debian's janus (the Janus WebRTC server, 1.1.2 on bookworm) for the stock-SFU test
# (tests/test_janus.py) if no janus is on PATH. The test starts its own Janus with a generated
# minimal configuration (keyface.server.janus.write_config), so the package's service and
# /etc/janus are not used. Works as root or with password-less sudo; without apt-get (or
# without the rights) it says so and exits 0: the Janus tests are then skipped.
set -u
if command -v janus >/dev/null 2>&1; then
    echo "janus: found $(command -v janus)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "janus: apt-get not available; the Janus tests will be skipped"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "janus: not root and no password-less sudo; the Janus tests will be skipped"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "janus: apt-get update failed; trying the cached lists"
# --no-install-recommends: the server and its plugins only (no demos, no documentation).
if $SUDO apt-get install -y -qq --no-install-recommends janus >/dev/null; then
    echo "janus: installed $(command -v janus)"
else
    echo "janus: apt-get install janus failed; the Janus tests will be skipped"
fi
exit 0
