"""The uvicorn internals the inline config-poll protocol uses (provisioning.uvicorn_contract):
present in the installed uvicorn, listed completely, and a missing one named clearly."""

from __future__ import annotations

import ast
import asyncio
import logging
from pathlib import Path

import pytest
import uvicorn

from offhook.provisioning import poll_protocol, uvicorn_contract
from offhook.provisioning.uvicorn_contract import (
    FAST_PATH_ENV,
    INLINE_PROTOCOL,
    PLAIN_PROTOCOL,
    problems,
    server_http_protocol,
)


def test_installed_uvicorn_has_every_internal_the_poll_protocol_uses() -> None:
    found = problems()
    assert found == [], (
        f"uvicorn {uvicorn.__version__} does not fit provisioning/poll_protocol.py "
        "(offhook server would fall back to the plain ASGI path):\n" + "\n".join(found)
    )


def test_the_contract_lists_every_inherited_name_the_poll_protocol_uses() -> None:
    """Every ``self.<name>`` in ConfigPollProtocol is its own or listed in the contract, so a
    new use of a uvicorn internal cannot slip past the check."""
    tree = ast.parse(Path(poll_protocol.__file__).read_text())
    cls = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ConfigPollProtocol"
    )
    own = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    own |= {
        t.id
        for n in cls.body
        if isinstance(n, ast.Assign | ast.AnnAssign)
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Name)
    }
    used = {
        n.attr
        for n in ast.walk(cls)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
    }
    listed = set(uvicorn_contract.PROTOCOL_METHODS) | set(uvicorn_contract.PROTOCOL_ATTRIBUTES)
    assert used - own - listed == set()


def test_a_missing_internal_is_named_with_the_uvicorn_version() -> None:
    class OldProtocol(asyncio.Protocol):
        def on_body(self, body: bytes) -> None:
            self.cycle = None

    found = problems(protocol=OldProtocol)
    assert any("HttpToolsProtocol.on_headers_complete() is missing" in p for p in found), found
    assert any("no longer sets self.pipeline" in p for p in found), found
    assert not any("self.cycle" in p for p in found), found
    assert all(p.startswith(f"uvicorn {uvicorn.__version__}: ") for p in found)
    assert problems(status_line={200: b"HTTP/1.1 200 OK\r\n"})[0].endswith(
        "STATUS_LINE has no 304 line"
    )
    moved = problems(import_error="No module named 'uvicorn.protocols.http.httptools_impl'")
    assert moved == [
        f"uvicorn {uvicorn.__version__}: cannot import its httptools protocol internals: "
        "No module named 'uvicorn.protocols.http.httptools_impl'"
    ]


def test_server_runs_the_inline_protocol_unless_switched_off() -> None:
    assert server_http_protocol({}) == INLINE_PROTOCOL
    assert server_http_protocol({FAST_PATH_ENV: "1"}) == INLINE_PROTOCOL
    for off in ("0", "off", "false"):
        assert server_http_protocol({FAST_PATH_ENV: off}) == PLAIN_PROTOCOL


def test_an_unfit_uvicorn_is_logged_and_the_server_takes_the_plain_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = [f"uvicorn {uvicorn.__version__}: HttpToolsProtocol no longer sets self.pipeline"]
    with caplog.at_level(logging.WARNING, logger=uvicorn_contract.__name__):
        assert server_http_protocol({}, check=lambda: missing) == PLAIN_PROTOCOL
    assert "config poll fast path off" in caplog.text
    problems = [getattr(r, "fields", {}).get("problems", "") for r in caplog.records]
    assert any("no longer sets self.pipeline" in text for text in problems)
