# iactpipe: `make demo` and `make test` work from a fresh clone with only Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-output

.PHONY: all venv demo demo-python test test-slow bench lint clean

all: test

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# workflows/full_chain.cwl with cwltool --parallel on workflows/full_chain.demo.yaml, then a gammapy fit
demo: $(STAMP)
	$(PY) -m iactpipe.demo --output-dir $(DEMO_DIR)

# the same steps one command line after the other, without CWL (and without the 10/30 deg IRF grid)
demo-python: $(STAMP)
	$(PY) -m iactpipe.demo --engine python --output-dir $(DEMO_DIR)-python

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile tests

test-slow: $(STAMP)
	$(PY) -m pytest -m slow tests

bench: $(STAMP)
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(PY) -m ruff check tools-py tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_DIR)-python .numba_cache build *.egg-info
include mk/engines.mk
