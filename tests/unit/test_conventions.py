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


# --- one log style: a constant message, the values as fields (offhook.contract.logs.kv) ---

_LOG_LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
_LOGGER_NAMES = {"log", "logger", "_log", "_logger", "logging"}


def _is_logger(node: ast.expr) -> bool:
    """``log``, ``logger``, ``logging`` or an attribute so named (``self.log``, ``self.logger``)."""
    if isinstance(node, ast.Name):
        return node.id in _LOGGER_NAMES
    return isinstance(node, ast.Attribute) and node.attr in _LOGGER_NAMES


def _log_style_problems(source: str, filename: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_LEVELS
            and _is_logger(node.func.value)
        ):
            continue
        # log.log(level, msg, ...) has the message second
        args = node.args[1:] if node.func.attr == "log" else node.args
        if not args:
            continue
        message, rest = args[0], args[1:]
        if not (isinstance(message, ast.Constant) and isinstance(message.value, str)):
            problems.append(f"{filename}:{node.lineno}: message is not a plain string constant")
        elif rest:
            problems.append(f"{filename}:{node.lineno}: %-arguments; put the values in extra=kv()")
    return problems


def test_the_log_style_check_catches_printf_and_built_messages() -> None:
    bad = (
        'log.info("x device=%s", d)\n'
        'self.logger.warning(f"x {d}")\n'
        'log.error("x " + " ".join(parts))\n'
        'logging.info("x %s", d)\n'
    )
    assert len(_log_style_problems(bad, "bad.py")) == 4
    good = 'log.info("device ready", extra=kv(device=d))\nlog.exception("failed")\n'
    assert _log_style_problems(good, "good.py") == []


def test_every_log_call_has_a_constant_message_and_kv_fields() -> None:
    problems = [
        problem
        for path in _sources()
        for problem in _log_style_problems(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert problems == [], "log calls not in the kv style:\n" + "\n".join(problems)


# --- imports at module level, but for front ends and late hardware/optional modules ---

# Front ends and composition roots import what a subcommand or a wiring step needs when it runs:
# one subcommand does not pay for another's imports (pjsua2, FastAPI, the image builder), and the
# phone's process wires audio, SIP and board in the order it starts them.
LAZY_MODULES = {
    "offhook.firmware.cli",
    "offhook.provisioning.cli",
    "offhook.provisioning.cli_firmware",  # the fleet command's firmware subcommands
    "offhook.provisioning.cli_security",  # its second-factor, session and privacy subcommands
    "offhook.provisioning.cli_alerts",  # its alerts subcommand
    "offhook.image.cli",
    "offhook.firmware.phone_process",
}
# Third-party modules imported late anywhere: hardware-only or optional ones, absent on a
# development machine or on a board without the part (RPi.GPIO, the OLED's luma, a serial
# port, ALSA, pjsua2 where only a SIP path needs it; httptools only where uvicorn's fit is
# checked).
LATE_THIRD_PARTY = {"RPi", "luma", "serial", "alsaaudio", "pjsua2", "httptools"}
# Deliberately late, one by one, with the reason.
LATE_IMPORTS = {
    # only a first contact parses certificates: cryptography would hold ~10 MB of the phone
    ("offhook.firmware.provisioning.pinning", "cryptography"),
    # the web UI is optional: create_app mounts it only when it imports
    ("offhook.provisioning.app", "offhook.provisioning.web"),
    # SQLCipher is optional (the sqlcipher extra): needed only when a database key is set
    ("offhook.provisioning.sqlcipher", "sqlcipher3"),
    # ldap3 and pyasn1 hold ~4 MB of an idle phone: only a directory query loads them
    ("offhook.firmware.ldap_directory", "ldap3"),
    # the provisioning package's client loads when named (a phone without a server never does)
    ("offhook.firmware.provisioning", "offhook.firmware.provisioning.client"),
}


def _function_level_imports(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, module) for every import inside a function."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, "." * inner.level + (inner.module or "")))
    return sorted(set(found))


def _misplaced_imports(module: str, source: str, filename: str) -> list[str]:
    if module in LAZY_MODULES:
        return []
    return [
        f"{filename}:{line}: import {name} inside a function"
        for line, name in _function_level_imports(source, filename)
        if name.split(".")[0] not in LATE_THIRD_PARTY
        and not any(module == m and (name + ".").startswith(n + ".") for m, n in LATE_IMPORTS)
    ]


def test_the_import_check_allows_front_ends_and_hardware_modules_only() -> None:
    code = "def f():\n    import json\n    import RPi.GPIO\n    from luma.oled import device\n"
    assert _misplaced_imports("offhook.firmware.x", code, "x.py") == [
        "x.py:2: import json inside a function"
    ]
    assert _misplaced_imports("offhook.provisioning.cli", code, "cli.py") == []


def test_imports_are_at_module_level_outside_front_ends() -> None:
    problems = [
        problem
        for path in _sources()
        for problem in _misplaced_imports(
            _module_name(path), path.read_text(), str(path.relative_to(ROOT))
        )
    ]
    assert problems == [], "function-level imports (docs/architecture.md, Conventions):\n" + (
        "\n".join(problems)
    )
