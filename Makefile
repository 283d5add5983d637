# Entry points used by README.md. Every target sets itself up first; set-up is idempotent.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup test typecheck lint unit demo bench image image-test image-test-rpi clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check --exclude "*.md" .

# pytest exits 5 when it collected nothing; make treats any non-zero exit as failure.
# The whole suite (about 1750 tests), including the qemu-amd64 image build, its QEMU boots and a call
# placed from the booted image; about 23 min in all from a clean clone on 2 cores (1365 s on the
# last run). The emulated-arm64 compile and boot and the A/B update under QEMU stay opt-in:
# make image-test-rpi, OFFHOOK_TEST_UPDATE_QEMU=1 (docs/image.md, docs/updates.md).
test: setup typecheck
	$(PY) -m ruff check .
	$(PY) -m pytest -q --run-image-full tests

# mypy over every package of offhook: contract, firmware, board, provisioning and image (settings
# in pyproject.toml). The folders are modules of the offhook namespace only when
# installed (setuptools package-dir): mypy does not follow the editable install's import hook,
# so it reads them through a tree of links named as they install.
TYPECHECK_ROOT := build/typecheck
typecheck: setup
	@rm -rf $(TYPECHECK_ROOT) && mkdir -p $(TYPECHECK_ROOT)/offhook
	@for d in contract board firmware provisioning image; do \
		ln -s $(CURDIR)/$$d $(TYPECHECK_ROOT)/offhook/$$d; done
	MYPYPATH=$(TYPECHECK_ROOT) $(PY) -m mypy -p offhook.contract -p offhook.firmware -p offhook.board \
		-p offhook.provisioning -p offhook.image

unit: setup
	$(PY) -m pytest -q tests/unit

# Only what the demo needs (scripts/setup.sh demo): no Chromium, QEMU or PostgreSQL.
demo:
	@bash scripts/setup.sh demo
	$(PY) -m offhook.firmware.demo

bench: setup
	$(PY) -m bench

# A bootable qemu-amd64 image in out/ (see docs/image.md for --board rpi and flashing).
image: setup
	$(VENV)/bin/offhook image build --board qemu-amd64 --out out

image-test: setup
	$(PY) -m pytest -q -m image --run-image-full tests

# The arm64 side, opt-in (root; never part of make test): the pjsua2 cross-compile and its
# self-test under qemu-user, the rpi card's recipe, the rpi image with the phone inside and its
# boot to a call under qemu-system-aarch64 -M virt, and the firmware's audio bridge on the booted
# card's dmix (through SSH). Each step's time is printed. Offline, point
# OFFHOOK_PJPROJECT_URL at the release tarball (file:///.../pjproject-2.15.1.tar.gz).
# RASPI3B=1 adds the same card's boot to a call under -M raspi3b (the Pi 3 B model: its DTB, SD
# card, mini UART, USB networking; 4-6 min more).
RASPI3B ?=
image-test-rpi: setup
	OFFHOOK_TEST_PJPROJECT_COMPILE=1 OFFHOOK_TEST_RPI_ROOTFS=1 OFFHOOK_TEST_RPI_IMAGE=1 \
	OFFHOOK_TEST_RPI_RASPI3B=$(RASPI3B) \
	$(PY) -m pytest -q -s --durations=0 -m image \
		tests/unit/image/test_pjproject.py tests/integration/test_image_rpi.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build var
