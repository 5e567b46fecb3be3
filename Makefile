# Two commands: `make demo` runs rigd on its embedded demo rig; `make test` runs every check.
# `make test-fast` is the developer's loop: the unit tier only (conftest.py gives the tiers).
# Both create .venv and install what is missing (Debian packages too, when run as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Test processes for `make test` and `make test-fast` (pytest-xdist; 0 runs in this process).
PYTEST_WORKERS ?= 3
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/system-deps.sh | sha256sum | cut -c1-12)

.PHONY: demo test test-fast lint install clean protos bench mutate

install: $(STAMP)

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo,inference,openadr,site,srv]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

lint: install
	$(BIN)/ruff check hal agent rigapi client controller tests bench fpga protos scripts conftest.py
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m unit

# The curated mutants (scripts/mutants.toml), each against the tests that must catch it; slow,
# not part of `make test`: run it before resolving an issue that touches the control paths.
mutate: install
	$(BIN)/python scripts/mutate.py

protos: install
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) .build .pytest_cache .mypy_cache .ruff_cache
