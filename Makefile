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

# KEEP_TORCH=1 keeps a torch already installed in .venv (e.g. your own CUDA build).
KEEP_TORCH ?= 0
TORCH_REQ := $(if $(filter 1,$(KEEP_TORCH)),,-r requirements-torch.txt)

$(STAMP): requirements.txt requirements-torch.txt requirements-fastreid.txt setup.py pyproject.toml \
		plugins/evaluation/_rank_kernel.pyx plugins/evaluation/rank_kernel.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_REQ) -r requirements.txt
	# fastreid pins torch==1.13.1 in its metadata: install it without dependencies.
	$(PY) -m pip install --quiet --no-deps -r requirements-fastreid.txt
	# compat mode puts the checkout itself on sys.path, so new sub-packages import without a reinstall.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
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
