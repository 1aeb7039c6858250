#!/bin/sh
# Debian's chromium for the browser tests (tests/test_browser.py, test_js_browser.py,
# test_relay_page.py), if no Chromium is on PATH; skipped gracefully without apt (install_deb.sh).
exec sh "$(dirname "$0")/install_deb.sh" chromium "the browser tests" \
    chromium chromium-browser google-chrome google-chrome-stable
