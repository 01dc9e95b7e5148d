# symconv — every target here works; none is a stub.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint format derivations codegen check-codegen sanitize

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

# Two pytest-xdist workers, one per core of the machines this runs on: the tests are
# independent of one another (the C fuzzing child runs without xdist).
# --dist loadgroup hands tests out one at a time (plain "load" sends each worker a
# contiguous block, which put the two neighbouring full-MNIST trainings on one worker, one
# after the other), a group of tests sharing an expensive fixture as one unit; with
# --no-loadscope-reorder in collection order, not largest group first. The trainings are
# marked `longest` and collected first (tests/conftest.py), so each worker starts one and
# the other tests fill in behind.
test: install lint check-codegen
	$(PY) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder

derivations: install
	$(PY) -m derive book --out generated

# Regenerate the NumPy/C kernels, bindings and LeNet-5 constants (reports what changed).
codegen: install
	$(PY) -m codegen --out generated

# Fails (listing the files) when generated/ differs from what codegen emits.
check-codegen: install
	$(PY) -m codegen --out generated --check

# The C kernels and the C fast path built with AddressSanitizer and UndefinedBehaviorSanitizer
# (own cache), running the kernel tests and a short training on the fused C step. A report
# aborts the process (no recovery) and fails the target; the log is grepped for reports too.
# First, two probes with a deliberate heap overflow and signed overflow must be caught.
# -O0 (after the usual -O3): the instrumented kernels compile in a fraction of the time of -O1.
# The NumPy backend's fuzzer is left out: it runs no C. libstdc++ is preloaded with ASan
# (Python is not instrumented): else ASan cannot intercept C++ exceptions of matplotlib.
SANITIZE_DIR   ?= .sanitize
SANITIZE_FLAGS ?= -O0 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SANITIZE_TESTS ?= tests/test_kernels_badinput.py tests/test_kernels_fastpath.py \
                  tests/test_kernels_ranges.py tests/test_kernels_lenet_shapes.py \
                  tests/test_kernels_table.py tests/test_lenet5_fused.py
sanitize: install
	@mkdir -p $(SANITIZE_DIR); log=$(SANITIZE_DIR)/sanitize.log; status=0; start=$$(date +%s); \
	export SYMCONV_CFLAGS="$(SANITIZE_FLAGS)" SYMCONV_CACHE="$(abspath $(SANITIZE_DIR))/cache" \
	  LD_PRELOAD="$$($${CC:-cc} -print-file-name=libasan.so) $$($${CC:-cc} -print-file-name=libstdc++.so)" \
	  OMP_NUM_THREADS=1 \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1; \
	printf '%s\n' '#include <stdint.h>' 'int64_t probe_read(const int64_t *a, int64_t i) { return a[i]; }' \
	  'int probe_add(int a, int b) { return a + b; }' > $(SANITIZE_DIR)/probe.c; \
	$${CC:-cc} $(SANITIZE_FLAGS) -shared -fPIC $(SANITIZE_DIR)/probe.c -o $(SANITIZE_DIR)/probe.so; \
	for call in "lib.probe_read(ctypes.c_void_p(a.ctypes.data), 4)" "lib.probe_add(2**31 - 1, 1)"; do \
	  if $(PY) -c "import ctypes, numpy as np; a = np.zeros(4, np.int64); \
	    lib = ctypes.CDLL('$(SANITIZE_DIR)/probe.so'); $$call" > $(SANITIZE_DIR)/probe.log 2>&1; then \
	    echo "sanitize: the sanitizers missed a deliberate bug ($$call): not active"; exit 1; fi; \
	  grep -qE "AddressSanitizer|runtime error:" $(SANITIZE_DIR)/probe.log || { \
	    echo "sanitize: no sanitizer report for $$call:"; cat $(SANITIZE_DIR)/probe.log; exit 1; }; \
	done; \
	{ $(PY) -m pytest -q -x -p no:cacheprovider $(SANITIZE_TESTS) \
	    --deselect "tests/test_kernels_badinput.py::test_fuzz_every_kernel[np]" && \
	  $(PY) -m lenet5 train --data sample --out $(SANITIZE_DIR)/run --overwrite --epochs 1 \
	    --limit 200 --batch-size 10 --no-progress; } > $$log 2>&1 || status=$$?; \
	tail -n 3 $$log; \
	if grep -qE "runtime error:|AddressSanitizer|LeakSanitizer" $$log; then \
	  echo "sanitize: FAILED, sanitizer report in $$log"; exit 1; fi; \
	echo "sanitize: exit status $$status in $$(( $$(date +%s) - start )) s (log: $$log)"; exit $$status

# Generated C vs generated NumPy vs im2col+BLAS (vs PyTorch when the `bench` extra is
# installed), every LeNet-5 layer, batch 1 and 64. ARGS="--json bench.json" etc.
.PHONY: bench-kernels
bench-kernels: install
	$(PY) bench/kernels.py $(ARGS)

# Distorted digits/s: the generated affine_resample kernel (C, NumPy) vs direct NumPy
# resampling, in calls of 1, 10 and 100 digits. ARGS="--digits 10000" etc.
.PHONY: bench-distort
bench-distort: install
	$(PY) bench/distort.py $(ARGS)

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
