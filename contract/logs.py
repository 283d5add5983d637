"""Structured logging: journald's native protocol when its socket exists, else key=value on stderr.

Every record may carry context fields: ``log.info("child exited", extra=kv(pid=12, rc=-9))``.
The message is a constant that says what happened; the values go in the fields. They follow the
message as ``child exited pid=12 rc=-9`` on stderr and in the journal's MESSAGE (what
``journalctl`` and the console show), and in the journal they are also fields of their own
(``PID=12``, ``RC=-9``, searchable with ``journalctl RC=-9``).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
SYSLOG_IDENTIFIER = "offhook"
_OURS = "offhook_handler"  # attribute marking the handler setup_logging installed
_FIELD_BAD_CHARS = re.compile(r"[^A-Z0-9_]")
# syslog priorities by logging level
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def kv(**fields: Any) -> dict[str, dict[str, Any]]:
    """Context fields for one log call, as ``extra=``."""
    return {"fields": fields}


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def message_with_fields(record: logging.LogRecord) -> str:
    """``child exited pid=12 rc=-9``: the message, then its context fields as key=value."""
    parts = [record.getMessage()]
    parts += [f"{key}={_format_value(value)}" for key, value in _fields_of(record).items()]
    return " ".join(parts)


def _format_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """``2026-11-23T02:00:00.123Z INFO offhook.supervisor child exited pid=12 rc=-9``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        line = " ".join(
            [f"{stamp}.{millis:03d}Z", record.levelname, record.name, message_with_fields(record)]
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def journal_field_name(key: str) -> str:
    """journald field names: upper case letters, digits, underscore; no leading underscore."""
    name = _FIELD_BAD_CHARS.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:64]


def encode_journal_entry(fields: dict[str, str]) -> bytes:
    """The journal's native datagram: ``KEY=value\\n``, or the length-prefixed form for newlines."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald as one datagram with its context fields as journal fields."""

    def __init__(self, socket_path: Path = JOURNAL_SOCKET, identifier: str = SYSLOG_IDENTIFIER):
        super().__init__()
        self.socket_path = str(socket_path)
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = message_with_fields(record)
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = {
                "MESSAGE": message,
                "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": self.identifier,
                "LOGGER": record.name,
                "CODE_FILE": record.pathname,
                "CODE_LINE": str(record.lineno),
                "CODE_FUNC": record.funcName,
            }
            for key, value in _fields_of(record).items():
                fields[journal_field_name(key)] = str(value)
            self._sock.sendto(encode_journal_entry(fields), self.socket_path)
        except Exception:  # logging must never take the phone down
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def setup_logging(
    level: str = "info",
    *,
    journal_socket: Path | None = None,
    stream: Any = None,
    identifier: str = SYSLOG_IDENTIFIER,
) -> logging.Handler:
    """Route the root logger to journald (when its socket exists) or to stderr as key=value lines.

    ``OFFHOOK_LOG=stderr`` forces stderr; ``OFFHOOK_LOG_FILE=PATH`` appends key=value lines to a
    file instead (the simulator's terminal UI must not be scribbled over by log lines).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    socket_path = journal_socket or JOURNAL_SOCKET
    use_journal = os.environ.get("OFFHOOK_LOG", "") != "stderr" and socket_path.exists()
    handler: logging.Handler
    log_file = os.environ.get("OFFHOOK_LOG_FILE", "")
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(KeyValueFormatter())
    elif use_journal:
        handler = JournalHandler(socket_path, identifier)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OURS, False):  # replace ours only (keep e.g. pytest's)
            root.removeHandler(old)
            old.close()
    setattr(handler, _OURS, True)  # a mark on a stdlib handler: no typed attribute for it
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    return handler
