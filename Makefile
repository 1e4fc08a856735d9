# Two commands on a fresh machine: `make demo` and `make test`. Both create or refresh .venv
# idempotently: a stamp file records which requirement files were installed, so a second run
# installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: install demo test lint format clean-venv

install: $(STAMP)

$(STAMP): requirements.txt requirements-fastreid.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# fastreid pins torch==1.13.1 in its metadata: install it without dependencies.
	$(PY) -m pip install --quiet --no-deps -r requirements-fastreid.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(VENV)/bin/pytest -q tests

demo: install
	$(PY) tools/demo.py

clean-venv:
	rm -rf $(VENV)
