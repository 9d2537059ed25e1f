# SqueezeNet edge toolchain: model -> quantize -> export / fpga -> rpi.
# Every target depends on `setup`, so a fresh clone needs no manual step.
# `make help` lists the targets.

SHELL       := /bin/bash
PYTHON_SYS  ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-stamp
export DATA_DIR ?= /usr/share/datasets/fashion-mnist

FLOAT_CKPT  := model/checkpoints/default.pt

.DEFAULT_GOAL := help
.PHONY: help setup data train eval test test-fast clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# --- setup ------------------------------------------------------------------------------------------
setup: $(SETUP_STAMP) data ## create .venv with the pinned dependencies and make sure the data set is present

$(SETUP_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@$(PY) -c "import torch, sys; v = torch.__version__.split('+')[0]; \
	  sys.exit(0 if v == '2.13.0' else 'error: torch ' + torch.__version__ + ' was installed, expected 2.13.0')"
	@touch $@

data: ## install Debian's dataset-fashion-mnist when the default data set is missing
	@if [ -f "$(DATA_DIR)/train-images-idx3-ubyte.gz" ] || [ -f "$(DATA_DIR)/train-images-idx3-ubyte" ]; then \
	  true; \
	elif [ "$(DATA_DIR)" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
	     && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) \
	  || { echo "error: could not install dataset-fashion-mnist" >&2; exit 1; }; \
	else \
	  echo "error: no Fashion-MNIST in $(DATA_DIR): run 'sudo apt-get install dataset-fashion-mnist' or set DATA_DIR to a directory holding the four *-idx?-ubyte.gz files" >&2; \
	  exit 1; \
	fi

# --- model ------------------------------------------------------------------------------------------
# The exact command that produced the committed checkpoint; `make train` reproduces it.
TRAIN_ARGS ?= --epochs 30 --optimizer adamw --lr 3e-3 --seed 0

train: setup ## retrain the default float SqueezeNet and replace the committed checkpoint
	$(PY) -m model.train $(TRAIN_ARGS) --out artifacts/model
	cp artifacts/model/model.pt $(FLOAT_CKPT)

eval: setup ## evaluate the committed checkpoints on the 10,000 test images (no retraining)
	$(PY) -m model.evaluate --checkpoint $(FLOAT_CKPT) --out artifacts/model

# --- tests ------------------------------------------------------------------------------------------
PYTEST_ARGS ?=

test: setup ## run the whole test suite (fails when no test ran)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: setup ## the suite without the slow end-to-end tests
	$(MAKE) test PYTEST_ARGS="-m 'not slow'"

clean: ## remove build outputs (keeps .venv and the committed checkpoints)
	rm -rf artifacts
