# edgerec developer entry points. Each target creates .venv on first use.
#   make demo   — the main job on MovieLens-100K: fetch, train + evaluate the teacher,
#                 convert to an on-device bundle, rank on-device with edgerec.runtime
#   make test   — lint + the whole test suite (slow end-to-end tests included) + device_tests in host mode
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
RUNS   ?= runs
# The default BERT4Rec teacher does not yet beat the tuned item-transition baseline on
# ML-100K validation by a margin whose CI excludes 0 (the teacher gate, issue 11), so the
# demo keeps it explicitly; the gate's verdict is printed and the bundle records it.
# `make demo DEMO_GATE=` shows the gate refusing it (exit 3).
DEMO_GATE ?= --allow-weak-teacher
BUNDLES ?= bundles

.PHONY: demo test test-fast lint venv clean bench postgres

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $@

demo: venv
	$(BIN)/edgerec data fetch movielens-100k
	$(BIN)/edgerec train --data movielens-100k --out $(RUNS)/teacher $(DEMO_GATE)
	$(BIN)/edgerec eval $(RUNS)/teacher --data movielens-100k
	$(BIN)/edgerec convert --teacher $(RUNS)/teacher --data movielens-100k \
		--out $(BUNDLES)/ml100k --force $(DEMO_GATE)
	$(PY) examples/quickstart.py $(BUNDLES)/ml100k

lint: venv
	$(BIN)/ruff check .
	$(PY) tools/lint_layers.py

# the coordinator tests run on a throw-away PostgreSQL server too: install it if missing
postgres:
	.ci/ensure-postgres.sh

test: lint postgres
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory device-test

test-fast: venv postgres
	$(BIN)/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

# --- device_tests/: the on-device suite (see device_tests/README.md) -----------------
#   make device-test            — host mode in .venv against a tiny bundle (CI: ~10 s, + ~50 s to build the bundle once)
#   make device-test-installed  — same, in a fresh venv holding only the built wheel + [runtime]
#   make device-test-aarch64    — the suite on aarch64 under qemu-user (needs root; ~40 s setup once, ~15-50 s a run)
DEVICE_BUNDLE  ?= build/device-bundle
DEVICE_PROFILE ?= host
DEVICE_REPORT  ?= build/device-report.json
DEVICE_VENV    ?= build/device-venv

.PHONY: device-bundle device-test device-test-installed device-test-aarch64

device-bundle: venv
	$(PY) -m device_tests.make_bundle $(DEVICE_BUNDLE)

device-test: device-bundle
	$(BIN)/pytest -c device_tests/pytest.ini device_tests --bundle $(DEVICE_BUNDLE) \
		--profile $(DEVICE_PROFILE) --report $(DEVICE_REPORT)

device-test-installed: device-bundle
	test -x $(DEVICE_VENV)/bin/python || $(PYTHON) -m venv $(DEVICE_VENV)
	wheel=$$(device_tests/build-wheel.sh build/device-dist $(PY) 2>/dev/null) && \
		$(DEVICE_VENV)/bin/python -m pip install -q "$$wheel[runtime]" 'pytest>=8,<10' && \
		$(DEVICE_VENV)/bin/python -m pip install -q --force-reinstall --no-deps "$$wheel"
	$(DEVICE_VENV)/bin/pytest -c device_tests/pytest.ini device_tests --bundle $(DEVICE_BUNDLE) \
		--profile $(DEVICE_PROFILE) --strict-install --report build/device-report-installed.json

device-test-aarch64: device-bundle
	device_tests/emulate-aarch64.sh $(DEVICE_BUNDLE)
