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
QUANT_CKPT  := quantize/checkpoints/default.pt
SAMPLES     ?= 1000
FPGA_PART   ?= xc7z020clg400-1
CLOCK_MHZ   ?= 100
REUSE       ?= 1
STRATEGY    ?= Latency

.DEFAULT_GOAL := help
.PHONY: help setup data train eval quantize qat qat-sweep fpga fpga-synth budget test test-fast clean

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
TRAIN_ARGS ?= --epochs 36 --optimizer adamw --lr 3e-3 --weight-decay 0.05 --seed 0

train: setup ## retrain the default float SqueezeNet and replace the committed checkpoint
	$(PY) -m model.train $(TRAIN_ARGS) --out artifacts/model
	cp artifacts/model/model.pt $(FLOAT_CKPT)

eval: setup ## evaluate the committed checkpoints on the 10,000 test images (no retraining)
	$(PY) -m model.evaluate --checkpoint $(FLOAT_CKPT) --out artifacts/model
	$(PY) -m quantize.evaluate --checkpoint $(QUANT_CKPT) --out artifacts/quantize

# --- quantize ---------------------------------------------------------------------------------------
# The exact command that produced the committed quantized checkpoint; `make qat` reproduces it.
QAT_ARGS ?= --weight-bits 4 --epochs 3 --lr 3e-4 --seed 0

qat: setup ## QAT from the float checkpoint and replace the committed quantized checkpoint
	$(PY) -m quantize --checkpoint $(FLOAT_CKPT) $(QAT_ARGS) --out artifacts/quantize
	cp artifacts/quantize/model.pt $(QUANT_CKPT)

SWEEP_ARGS ?= --epochs 1 --limit 20000

qat-sweep: setup ## short QAT at 8, 4, 3 and 2-bit weights: the size/accuracy table
	$(PY) -m quantize.sweep --out artifacts/quantize/sweep -- --checkpoint $(FLOAT_CKPT) $(SWEEP_ARGS)

# `make quantize` reuses the committed checkpoint while it was made from the committed float checkpoint
# (compared by sha256, not by file time: a fresh clone gives every file the same time).
quantize: setup ## the quantized model (reuses the committed checkpoint when it is up to date)
	@$(PY) -m quantize.evaluate --is-fresh --checkpoint $(QUANT_CKPT) --float-checkpoint $(FLOAT_CKPT) \
	  || $(MAKE) --no-print-directory qat
	$(PY) -m quantize.evaluate --checkpoint $(QUANT_CKPT) --out artifacts/quantize --if-changed

# --- fpga -------------------------------------------------------------------------------------------
FPGA_ARGS = --checkpoint $(QUANT_CKPT) --samples $(SAMPLES) --part $(FPGA_PART) --clock-mhz $(CLOCK_MHZ) \
            --reuse-factor $(REUSE) --strategy $(STRATEGY)

fpga: setup quantize ## hls4ml HLS project + bit-exact C simulation (SAMPLES=N|all) + budget check
	$(PY) -m fpga $(FPGA_ARGS)
	$(MAKE) --no-print-directory budget

fpga-synth: setup ## run Vitis HLS C synthesis on the generated project (needs vitis_hls on PATH)
	$(PY) -m fpga.synth --project artifacts/fpga/hls_project

budget: setup ## check every built artifact against the 0.5 MiB budget (BUDGET_BYTES=N to change it)
	$(PY) -m fpga.budget --checkpoint $(QUANT_CKPT)

# --- tests ------------------------------------------------------------------------------------------
PYTEST_ARGS ?=

test: setup ## run the whole test suite (fails when no test ran)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: setup ## the suite without the slow end-to-end tests
	$(MAKE) test PYTEST_ARGS="-m 'not slow'"

clean: ## remove build outputs (keeps .venv and the committed checkpoints)
	rm -rf artifacts
