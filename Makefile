# Entry points used by README.md. Every target sets itself up first; set-up is idempotent.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup test lint unit demo bench image-test clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# pytest exits 5 when it collected nothing; make treats any non-zero exit as failure.
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

unit: setup
	$(PY) -m pytest -q tests/unit

demo: setup
	$(PY) -m firmware.demo

bench: setup
	$(PY) -m bench

image-test: setup
	$(PY) -m pytest -q -m image --run-image-full tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build var
