# The two quick-start commands: `make test` and `make demo`. Both install first (see tools/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmssm-installed

.PHONY: install test lint demo

$(STAMP): tools/install.sh setup.py requirements/runtime.txt requirements/tests.txt
	MMSSM_VENV=$(VENV) bash tools/install.sh
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) tools/demo.py
