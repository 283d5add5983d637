"""A file form read as it arrives: ``multipart/form-data`` parsed chunk by chunk, the CSRF token
checked before the first byte of the file is kept, the file's bytes handed straight to a sink
(the firmware page's ``BundleReceiver``, as the REST upload's body is). Starlette's
``request.form()`` would first spool the whole bundle to a temporary file of its own.

The form must send the token field before the file field (the browser sends fields in the
order of the form: the template puts the hidden token first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from offhook.contract.errors import OffhookError

MAX_FIELD_BYTES = 4096  # a plain field of the form (the token); the file has its own cap


class UploadFormError(OffhookError, ValueError):
    """The form is not what the page sent: the message says what is wrong."""


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


def _disposition(part: _Part) -> None:
    _, options = parse_options_header(part.headers.get("content-disposition", ""))
    part.name = options.get(b"name", b"").decode("utf-8", "replace")
    raw = options.get(b"filename")
    part.filename = raw.decode("utf-8", "replace") if raw is not None else None


async def read_file_form(
    request: Request,
    file_field: str,
    before_file: Callable[[dict[str, str]], None],
    sink: Callable[[bytes], None],
) -> tuple[dict[str, str], str]:
    """Parse the request body; ``before_file(fields)`` runs once the file part begins (with
    the fields seen so far: it checks the token and may raise), then ``sink`` gets the file's
    bytes. Returns the plain fields and the file's name."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UploadFormError("expected a multipart/form-data file form")
    fields: dict[str, str] = {}
    current = _Part()
    header_name = bytearray()
    header_value = bytearray()
    filename = ""
    seen_file = False

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[header_name.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal filename, seen_file
        _disposition(current)
        if current.name == file_field:
            if seen_file:
                raise UploadFormError(f"the form has more than one {file_field!r} file")
            seen_file = True
            filename = current.filename or ""
            before_file(dict(fields))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current.name == file_field:
            sink(data[start:end])
            return
        current.value.extend(data[start:end])
        if len(current.value) > MAX_FIELD_BYTES:
            raise UploadFormError(f"form field {current.name!r} is too long")

    def on_part_end() -> None:
        if current.name != file_field and current.name:
            fields[current.name] = current.value.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    async for chunk in request.stream():
        parser.write(chunk)
    parser.finalize()
    if not seen_file:
        raise UploadFormError(f"the form has no {file_field!r} file")
    return fields, filename
