# The two quick-start commands: `make test` and `make demo`. Both install first (see tools/install.sh).
# `make test` runs every test not marked slow (under 15 minutes on a 2-core CPU); `make test-slow` runs the slow
# ones (whole training runs, compiled kernels). CI runs both. Each prints its slowest tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmssm-installed

.PHONY: install test test-slow lint demo build-check

$(STAMP): tools/install.sh setup.py requirements/runtime.txt requirements/tests.txt
	MMSSM_VENV=$(VENV) bash tools/install.sh
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest tests -m "not slow" --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest tests -m slow --durations=15

demo: $(STAMP)
	$(PY) tools/demo.py

# Compile the CUDA scan kernels (csrc/) for one architecture, where nvcc is found, so that a change that breaks
# the build fails here; the machine needs no GPU. CI runs it before the tests.
NVCC_HOME ?= $(or $(CUDA_HOME),/usr/local/cuda)
build-check: $(STAMP)
	@if ! ls csrc/selective_scan/*.cu >/dev/null 2>&1; then \
	  echo "build-check: no CUDA sources under csrc/selective_scan, nothing to compile"; \
	elif [ -x "$(NVCC_HOME)/bin/nvcc" ]; then \
	  CUDA_HOME=$(NVCC_HOME) TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$$(nproc) MMSSM_EXT_DIR=$${MMSSM_EXT_DIR:-build/ext-check} \
	    $(PY) -m mmssm.ops.selective_scan.cuda_scan --build; \
	else echo "build-check: no nvcc under $(NVCC_HOME), skipping the CUDA extension build"; fi
