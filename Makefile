# symconv — every target here works; none is a stub.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint format derivations codegen check-codegen

install: $(STAMP)

# Re-installs only when the project metadata changed (idempotent, fast otherwise).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: install lint check-codegen
	$(PY) -m pytest -q

derivations: install
	$(PY) -m derive book --out generated

# Regenerate the NumPy/C kernels, bindings and LeNet-5 constants (reports what changed).
codegen: install
	$(PY) -m codegen --out generated

# Fails (listing the files) when generated/ differs from what codegen emits.
check-codegen: install
	$(PY) -m codegen --out generated --check

# Generated C vs generated NumPy vs im2col+BLAS (vs PyTorch when the `bench` extra is
# installed), every LeNet-5 layer, batch 1 and 64. ARGS="--json bench.json" etc.
.PHONY: bench-kernels
bench-kernels: install
	$(PY) bench/kernels.py $(ARGS)

# Whole LeNet-5, images/s of inference and training steps: generated C vs generated NumPy
# vs PyTorch eager (the `bench` extra), batch 1 and 64. ARGS="--json bench.json --rounds 9".
.PHONY: bench
bench: install
	$(PY) bench/lenet5.py $(ARGS)

# LeNet-5 on the bundled 5,000-digit MNIST sample (offline): installs, regenerates the
# kernels, trains, prints the test error and the pictures.
DEMO_OUT  ?= runs/demo
DEMO_ARGS ?= --epochs 20 --batch-size 1
.PHONY: demo train
demo: codegen
	$(PY) -m lenet5 train --data sample --out $(DEMO_OUT) --overwrite --seed 0 $(DEMO_ARGS)

# Full MNIST: make train DATA=DIR (the four IDX files); TRAIN_ARGS="--distort" etc.
TRAIN_OUT ?= runs/mnist
train: install
	@test -n "$(DATA)" || { echo "usage: make train DATA=DIR  (DIR holds the four MNIST IDX files)"; exit 2; }
	$(PY) -m lenet5 train --data "$(DATA)" --out $(TRAIN_OUT) $(TRAIN_ARGS)

# The 5-seed study: make reproduce DATA=DIR (seeds 0-4 as parallel processes, one per core,
# one OpenMP thread each; run again to resume). REPRO_ARGS="--distort" etc.
REPRO_OUT ?= runs/reproduce
.PHONY: reproduce
reproduce: install
	@test -n "$(DATA)" || { echo "usage: make reproduce DATA=DIR  (DIR holds the four MNIST IDX files)"; exit 2; }
	$(PY) -m lenet5 reproduce --data "$(DATA)" --seeds 0-4 --out $(REPRO_OUT) $(REPRO_ARGS)
