# edgerec developer entry points. Each target creates .venv on first use.
#   make demo   — the main job on MovieLens-100K (fetch, train, evaluate)
#   make test   — lint + the whole test suite (slow end-to-end tests included)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
RUNS   ?= runs

.PHONY: demo test test-fast lint venv clean bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $@

demo: venv
	$(BIN)/edgerec data fetch movielens-100k
	$(BIN)/edgerec train --data movielens-100k --out $(RUNS)/teacher
	$(BIN)/edgerec eval $(RUNS)/teacher --data movielens-100k

lint: venv
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -q

test-fast: venv
	$(BIN)/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
