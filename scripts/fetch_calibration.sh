#!/bin/sh
# Fetch the official metric calibration pairs (five TID2013 pairs with LPIPS/DISTS values) from
# the pyiqa sdist on PyPI into a temporary folder and print that folder; tests/test_metrics.py
# checks keyface's LPIPS-Alex and DISTS against them when KEYFACE_IQA_CALIBRATION names it.
# The images are not redistributed in this repository (their licence is non-commercial).
# Prints nothing and exits 1 when the download fails (the test then skips).
set -eu
version=0.1.16
dir=$(mktemp -d "${TMPDIR:-/tmp}/keyface-calibra.XXXXXX")
python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$dir" "pyiqa==$version" \
    >/dev/null 2>&1 || { rm -rf "$dir"; exit 1; }
tar xzf "$dir/pyiqa-$version.tar.gz" -C "$dir" "pyiqa-$version/ResultsCalibra" || {
    rm -rf "$dir"; exit 1; }
rm -f "$dir/pyiqa-$version.tar.gz"
echo "$dir/pyiqa-$version/ResultsCalibra"
