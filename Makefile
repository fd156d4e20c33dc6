# make demo: set up .venv, make sure Fashion-MNIST is there, train the demo recipe.
# make test: same setup, then the whole test suite (what CI runs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: setup data demo test lint clean-venv

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

data:
	@bash tools/ensure_fashion_mnist.sh

demo: setup data
	$(VENV)/bin/ssl-toolkit fit recipes/fashion_mnist/simclr.yaml $(DEMO_ARGS)

test: setup data
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check ssl_toolkit tests tools benchmarks
	$(VENV)/bin/ruff format --check ssl_toolkit tests tools benchmarks

clean-venv:
	rm -rf $(VENV)
