"""dialog-info+xml bodies (RFC 4235) of dialog-event NOTIFYs, as WatchedDialog records."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from offhook.contract.errors import OffhookError
from offhook.firmware.events import WatchedDialog

NS = "{urn:ietf:params:xml:ns:dialog-info}"
MAX_BODY = 64 * 1024  # a NOTIFY body larger than this is refused, not parsed


class DialogInfoError(OffhookError, ValueError):
    """A dialog-info body that cannot be read."""


@dataclass(frozen=True)
class DialogInfo:
    entity: str
    version: int
    full: bool  # state="full": the whole set; "partial": only the dialogs that changed
    dialogs: tuple[WatchedDialog, ...]


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _party(dialog: ET.Element, side: str) -> tuple[str, str, str]:
    """(identity URI, display name, target URI) of <local> or <remote>."""
    party = dialog.find(NS + side)
    if party is None:
        return "", "", ""
    identity = party.find(NS + "identity")
    target = party.find(NS + "target")
    display = identity.get("display", "") if identity is not None else ""
    return _text(identity), display.strip(), (target.get("uri", "") if target is not None else "")


def parse_dialog_info(body: str) -> DialogInfo:
    """Parse a dialog-info document; an empty body (a server with nothing published yet) is an
    empty full set."""
    if not body.strip():
        return DialogInfo("", 0, True, ())
    if len(body) > MAX_BODY:
        raise DialogInfoError(f"dialog-info body of {len(body)} bytes is over {MAX_BODY}")
    if "<!DOCTYPE" in body or "<!ENTITY" in body:
        raise DialogInfoError("dialog-info with a DTD or entities is refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise DialogInfoError(f"dialog-info is not well-formed XML: {exc}") from None
    if root.tag != NS + "dialog-info":
        raise DialogInfoError(f"root element is {root.tag!r}, not dialog-info")
    try:
        version = int(root.get("version", "0"))
    except ValueError:
        raise DialogInfoError(f"dialog-info version {root.get('version')!r}") from None
    dialogs = []
    for element in root.findall(NS + "dialog"):
        remote_uri, remote_name, remote_target = _party(element, "remote")
        dialogs.append(
            WatchedDialog(
                call_id=element.get("call-id", ""),
                state=_text(element.find(NS + "state")).lower(),
                direction=element.get("direction", ""),
                local_tag=element.get("local-tag", ""),
                remote_tag=element.get("remote-tag", ""),
                remote_uri=remote_uri,
                remote_name=remote_name,
                remote_target=remote_target,
            )
        )
    return DialogInfo(
        root.get("entity", ""), version, root.get("state") != "partial", tuple(dialogs)
    )
