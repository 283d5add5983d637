"""One of each: project-wide conventions, checked on the source (docs/architecture.md)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from offhook.contract.errors import OffhookError

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = ("contract", "board", "firmware", "provisioning", "image")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "offhook." + ".".join(parts)


def _sources() -> list[Path]:
    return sorted(p for top in PRODUCTS for p in (ROOT / top).rglob("*.py"))


def _error_classes() -> list[tuple[Path, str]]:
    """(file, class name) for every class whose name says it is an error."""
    found = []
    for path in _sources():
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                found.append((path, node.name))
    return found


def test_the_scan_finds_the_project_errors() -> None:
    names = {name for _, name in _error_classes()}
    assert {"ConfigError", "BuildError", "ApiError", "SipEngineError"} <= names


@pytest.mark.parametrize(
    ("path", "name"), _error_classes(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_project_error_derives_from_offhook_error(path: Path, name: str) -> None:
    try:
        module = importlib.import_module(_module_name(path))
    except (
        ImportError
    ) as exc:  # an optional dependency of this installation (pjsua2 is always here)
        pytest.skip(f"{_module_name(path)} does not import here: {exc}")
    cls = getattr(module, name)
    assert inspect.isclass(cls) and issubclass(cls, OffhookError), (
        f"{path.relative_to(ROOT)}: {name} must derive from offhook.contract.errors.OffhookError"
    )
