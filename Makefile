# Entry points used by README.md. Every target sets itself up first; set-up is idempotent.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup test lint unit demo bench image image-test clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check --exclude "*.md" .

# pytest exits 5 when it collected nothing; make treats any non-zero exit as failure.
# The whole suite, including the full qemu-amd64 image build and QEMU boot test (about 3 min
# with a cold image cache); the emulated-arm64 runs stay opt-in (docs/image.md).
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q --run-image-full tests

unit: setup
	$(PY) -m pytest -q tests/unit

demo: setup
	$(PY) -m firmware.demo

bench: setup
	$(PY) -m bench

# A bootable qemu-amd64 image in out/ (see docs/image.md for --board rpi and flashing).
image: setup
	$(VENV)/bin/offhook image build --board qemu-amd64 --out out

image-test: setup
	$(PY) -m pytest -q -m image --run-image-full tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build var
