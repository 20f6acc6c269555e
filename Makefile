# Two commands: `make run` and `make test`. Everything else is a step they call.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
HOST ?= 127.0.0.1
PORT ?= 8017
# The ImageNet class names of the bundled model come as text files inside the timm wheel; we read them
# from there and never import timm (it needs torchvision, which has no build for this torch).
TIMM_VERSION := 1.0.31

.PHONY: setup setup-test run test lint typecheck unit bench clean

setup: $(VENV)/.setup-done
$(VENV)/.setup-done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and alone: anything that needs torch before it is installed pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	$(PIP) install --no-deps timm==$(TIMM_VERSION)
	touch $@

setup-test: $(VENV)/.test-done
$(VENV)/.test-done: $(VENV)/.setup-done
	$(PIP) install -e '.[test]'
	touch $@

run: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/rtvi serve embed --host $(HOST) --port $(PORT)

lint: setup-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup-test
	$(VENV)/bin/mypy

test: setup-test lint typecheck
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

bench: setup-test
	$(PIP) install -e '.[bench]' || echo "decord did not install; the benchmark skips it"
	HF_HUB_OFFLINE=1 $(PY) bench/sampler_bench.py
	HF_HUB_OFFLINE=1 $(PY) bench/e2e_bench.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
