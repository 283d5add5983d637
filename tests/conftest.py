"""Suite-wide options. Fixtures for real components live in tests/fixtures/ (one module each)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-image-full",
        action="store_true",
        default=False,
        help="also run the full image build + QEMU boot test (make test passes it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image_full: full image build and boot (make test)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-image-full"):
        return
    skip = pytest.mark.skip(reason="full image build: pass --run-image-full (make test does)")
    for item in items:
        if "image_full" in item.keywords:
            item.add_marker(skip)
