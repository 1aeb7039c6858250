#!/bin/sh
# Debian's nodejs for the browser decoder's tests (tests/test_js_decoder.py run its ES modules
# in node), if no node is on PATH; only the distribution's package, no npm packages; skipped
# gracefully without apt (install_deb.sh).
exec sh "$(dirname "$0")/install_deb.sh" nodejs "the JS decoder tests" node nodejs
