"""The one place that touches uvicorn's private HTTP protocol internals, and the check of them.

provisioning.poll_protocol answers the config poll inside uvicorn's httptools parser callbacks
(its speed comes from skipping the ASGI cycle). That leans on names uvicorn does not promise:
they are listed here, imported from here, and ``problems()`` checks them against the installed
uvicorn. ``server_http_protocol()`` is what ``offhook server`` runs: the inline protocol when the
check passes, otherwise (or with OFFHOOK_POLL_FAST_PATH=0) uvicorn's own protocol, logged; the
config poll then goes through ConfigFastPath on the ASGI path, with the same answers.
tests/unit/test_prov_uvicorn_contract.py fails on an incompatible uvicorn, naming what is missing.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn

from offhook.contract.logs import kv

try:
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import (
        STATUS_LINE,
        HttpToolsProtocol,
        RequestResponseCycle,
    )
    from uvicorn.server import ServerState

    IMPORT_ERROR = ""
except ImportError as exc:  # moved or renamed in this uvicorn, or httptools missing
    IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)

FAST_PATH_ENV = "OFFHOOK_POLL_FAST_PATH"
INLINE_PROTOCOL = "offhook.provisioning.poll_protocol:ConfigPollProtocol"
PLAIN_PROTOCOL = "httptools"  # uvicorn's own protocol over the same parser

# What poll_protocol.ConfigPollProtocol uses of uvicorn.
PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",  # _inline_response_complete does its work for an inline answer
    "_unset_keepalive_if_required",
    "timeout_keep_alive_handler",
)
PROTOCOL_ATTRIBUTES = (  # set by HttpToolsProtocol itself
    "app",
    "loop",
    "logger",
    "parser",
    "transport",
    "flow",
    "server_state",
    "timeout_keep_alive",
    "cycle",
    "pipeline",
    "headers",
    "url",
    "expect_100_continue",
    "scope",
)
CYCLE_ATTRIBUTES = (
    "response_started",
    "response_complete",
    "disconnected",
    "keep_alive",
    "message_event",
)
SERVER_STATE_ATTRIBUTES = ("default_headers", "total_requests")
FLOW_METHODS = ("resume_reading",)
PARSER_METHODS = ("get_method", "get_http_version", "should_keep_alive", "should_upgrade")
STATUS_LINES = (200, 304, 401, 403, 404, 408, 413, 503)


def _names_used(cls: type) -> set[str]:
    """Every attribute name the class's own code reads or writes (``self.x`` included)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            code = getattr(value, "__code__", None)
            stack = [code] if isinstance(code, types.CodeType) else []
            while stack:
                current = stack.pop()
                names.update(current.co_names)
                stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


def problems(
    protocol: Any = None,
    cycle: Any = None,
    status_line: Mapping[int, bytes] | None = None,
    import_error: str | None = None,
) -> list[str]:
    """What the inline poll protocol needs and the installed uvicorn lacks, each naming the
    missing name and the uvicorn version; empty when it fits. The arguments default to the
    installed uvicorn's classes."""
    version = uvicorn.__version__
    error = IMPORT_ERROR if import_error is None else import_error
    if error:
        return [f"uvicorn {version}: cannot import its httptools protocol internals: {error}"]
    protocol = protocol or HttpToolsProtocol
    cycle = cycle or RequestResponseCycle
    status_line = STATUS_LINE if status_line is None else status_line
    found: list[str] = []
    where = "uvicorn.protocols.http.httptools_impl"
    for name in PROTOCOL_METHODS:
        if not callable(getattr(protocol, name, None)):
            found.append(f"uvicorn {version}: {where}.HttpToolsProtocol.{name}() is missing")
    used = _names_used(protocol)
    for name in PROTOCOL_ATTRIBUTES:
        if name not in used:
            found.append(f"uvicorn {version}: HttpToolsProtocol no longer sets self.{name}")
    used = _names_used(cycle)
    for name in CYCLE_ATTRIBUTES:
        if name not in used:
            found.append(f"uvicorn {version}: RequestResponseCycle no longer sets self.{name}")
    state = vars(ServerState())
    for name in SERVER_STATE_ATTRIBUTES:
        if name not in state:
            found.append(f"uvicorn {version}: uvicorn.server.ServerState has no {name}")
    for name in FLOW_METHODS:
        if not callable(getattr(FlowControl, name, None)):
            found.append(f"uvicorn {version}: FlowControl.{name}() is missing")
    import httptools

    for name in PARSER_METHODS:
        if not callable(getattr(httptools.HttpRequestParser, name, None)):
            found.append(f"uvicorn {version}: httptools.HttpRequestParser.{name}() is missing")
    for status in STATUS_LINES:
        if not isinstance(status_line.get(status), bytes):
            found.append(f"uvicorn {version}: {where}.STATUS_LINE has no {status} line")
    return found


def server_http_protocol(
    env: Mapping[str, str] | None = None, check: Callable[[], list[str]] = problems
) -> str:
    """uvicorn's ``http=`` for ``offhook server``: the inline poll protocol, or uvicorn's own
    when it is switched off (OFFHOOK_POLL_FAST_PATH=0) or this uvicorn does not fit."""
    env = os.environ if env is None else env
    if env.get(FAST_PATH_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        log.warning(
            "config poll fast path off: plain ASGI path",
            extra=kv(setting=FAST_PATH_ENV, value=env[FAST_PATH_ENV]),
        )
        return PLAIN_PROTOCOL if not IMPORT_ERROR else "auto"
    found = check()
    if found:
        log.warning(
            "config poll fast path off: this uvicorn does not fit; plain ASGI path",
            extra=kv(problems="; ".join(found)),
        )
        return PLAIN_PROTOCOL if not IMPORT_ERROR else "auto"
    return INLINE_PROTOCOL
