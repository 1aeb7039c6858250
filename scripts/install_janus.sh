#!/bin/sh
# Debian's janus (the Janus WebRTC server, 1.1.2 on bookworm) for the stock-SFU test
# (tests/test_janus.py), if no janus is on PATH. The test starts its own Janus with a generated
# minimal configuration (keyface.server.janus.write_config), so the package's service and
# /etc/janus are not used. --no-install-recommends: the server and its plugins only (no demos,
# no documentation). Skipped gracefully without apt (install_deb.sh).
APT_OPTS=--no-install-recommends exec sh "$(dirname "$0")/install_deb.sh" janus \
    "the Janus tests" janus
