#!/bin/sh
# Install a Debian package that some tests need, if none of its commands is on PATH:
#
#     sh scripts/install_deb.sh PACKAGE "WHAT IS SKIPPED WITHOUT IT" COMMAND [COMMAND...]
#
# Works as root or with password-less sudo. Without apt-get (or without the rights) it says
# so and exits 0: those tests are then skipped, everything else still runs. Extra apt-get
# options (e.g. --no-install-recommends) in APT_OPTS. Used by install_chromium.sh,
# install_node.sh and install_janus.sh.
set -u
package=$1
skipped=$2
shift 2
for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "$package: found $(command -v "$name")"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$package: apt-get not available; $skipped will be skipped"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "$package: not root and no password-less sudo; $skipped will be skipped"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "$package: apt-get update failed; trying the cached lists"
# shellcheck disable=SC2086  # APT_OPTS is a list of options
if $SUDO apt-get install -y -qq ${APT_OPTS:-} "$package" >/dev/null; then
    echo "$package: installed"
else
    echo "$package: apt-get install $package failed; $skipped will be skipped"
fi
exit 0
