# Tierflow: the two commands are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
# The suite runs again on Python 3.12 (pyenv's; .ci/run installs it when missing), in its own venv.
PYENV_ROOT ?= $(HOME)/.pyenv
PY312 ?= $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.12.*/bin/python3.12)))
VENV312 := $(CURDIR)/.venv-3.12

# State (S3 data, Airflow DB and logs, PFS and NVMe tier directories) stays inside the checkout.
export TIERFLOW_HOME ?= $(CURDIR)/.tierflow
export PYTHONPYCACHEPREFIX ?= $(CURDIR)/.tierflow/pycache
# This machine sets PYTHONDONTWRITEBYTECODE, which makes every Airflow process compile from source.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help install install-3.12 demo test test-3.12 lint unit integration faults airflow airflow-stop s3-serve s3-stop bench clean

help:
	@echo "make demo          set up, start the embedded S3 server, run every DAG end to end, print a summary"
	@echo "make test          set up and run the whole suite (ruff, mypy, pytest: unit + integration + e2e; then on 3.12)"
	@echo "make test-3.12     unit + integration tests on Python 3.12 (pyenv's), in .venv-3.12"
	@echo "make faults        the fault suite alone (SIGKILL, full disks, server restarts, revoked credentials)"
	@echo "make airflow       the Airflow UI on http://127.0.0.1:8791 with the embedded S3 (make airflow-stop)"
	@echo "make bench         benchmarks against reference tools (s5cmd, cp, zstd, md5); BENCH=\"name ...\" for some"
	@echo "make install       create .venv from uv.lock (Python 3.11, dev tools included)"

$(BIN)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --python 3.11
	@touch $@

install: $(BIN)/.installed

$(VENV312)/.installed: pyproject.toml uv.lock
	@test -n "$(PY312)" || { echo "Python 3.12 not found under $(PYENV_ROOT)/versions (pyenv install 3.12)"; exit 1; }
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	UV_PROJECT_ENVIRONMENT=$(VENV312) $(UV) sync --frozen --python $(PY312)
	@touch $@

install-3.12: $(VENV312)/.installed

demo: install
	$(BIN)/tierflow demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-3.12

test-3.12: install-3.12
	$(VENV312)/bin/pytest -m "unit or integration"

unit: install
	$(BIN)/pytest -m unit

integration: install
	$(BIN)/pytest -m integration

faults: install
	$(BIN)/pytest -m faults

airflow: install
	$(BIN)/tierflow airflow up

airflow-stop: install
	$(BIN)/tierflow airflow down

s3-serve: install
	$(BIN)/tierflow s3 serve

s3-stop: install
	$(BIN)/tierflow s3 stop

bench: install
	$(BIN)/tierflow bench $(BENCH)

clean:
	-$(BIN)/tierflow airflow down
	-$(BIN)/tierflow s3 stop
	rm -rf .tierflow .venv-3.12
