# `make run`: set up (.venv, pinned deps, build) and run the main job.
# `make test`: the same set-up, then the whole suite.
# Pins keep torch at the CPU 2.13.0 wheel: nothing here may pull a CUDA torch (see requirements.txt).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
BUILT  := $(VENV)/.built
SOURCES := setup.py $(shell find csrc -type f 2>/dev/null)
export MAX_JOBS ?= 2

.PHONY: run test build bench clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade-strategy only-if-needed -r requirements.txt
	touch $@

$(BUILT): $(STAMP) $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(BUILT)

run: $(BUILT)
	$(PY) -m mnv4_kernels run $(ARGS)

test: $(BUILT)
	$(PY) -m pytest $(PYTEST_ARGS)

# the ExecuTorch XNNPACK baseline: --no-deps over pins, so pip cannot swap the CPU torch (requirements-bench.txt)
BENCH_STAMP := $(VENV)/.bench-deps-installed
$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(PY) -m pip install -q --no-deps -r requirements-bench.txt
	touch $@

bench: $(BUILT) $(BENCH_STAMP)
	$(PY) -m mnv4_kernels bench $(ARGS)

clean:
	rm -rf build build-* *.egg-info mnv4_kernels/_C*.so $(BUILT)
