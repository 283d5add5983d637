"""Destructive actions take two steps: the button opens a page that says what will go (how many
devices a group takes along, what a template's removal changes), and only its own form, with
``confirm=yes``, does it. Plain links and forms: it works without JavaScript. A POST without
the confirmation redirects to that page and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from offhook.provisioning.models import Device, Group, Line, Template
from offhook.provisioning.render import subtree_group_ids
from offhook.provisioning.web.core import render

CONFIRM_VALUE = "yes"


@dataclass
class Confirmation:
    title: str
    question: str
    action: str  # where the confirmed form posts
    button: str
    cancel_url: str
    consequences: list[str] = field(default_factory=list)
    blocked: str = ""  # why it cannot be done at all (nothing to confirm)
    fields: list[tuple[str, str]] = field(default_factory=list)  # posted again with confirm=yes


def confirmed(value: str) -> bool:
    return value == CONFIRM_VALUE


def show(request: Request, confirmation: Confirmation, section: str) -> Response:
    context = {"section": section, **confirmation.__dict__}
    return render(request, "confirm.html", context)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def group_deletion(db: Session, group: Group) -> Confirmation:
    devices = db.scalar(select(func.count()).select_from(Device).where(Device.group_id == group.id))
    children = list(db.scalars(select(Group.name).where(Group.parent_id == group.id)))
    own = len(group.settings or {})
    kind = group.kind
    confirmation = Confirmation(
        title=f"Delete {kind} {group.name}?",
        question=f"Delete the {kind} {group.name}?",
        action=f"/groups/{group.id}/delete",
        button=f"Delete {kind} {group.name}",
        cancel_url=f"/groups/{group.id}",
    )
    if children:
        confirmation.blocked = (
            f"It holds {_plural(len(children), 'group')} ({', '.join(sorted(children))}): "
            "move or delete them first."
        )
        return confirmation
    items = [
        f"{_plural(devices or 0, 'device')} will leave it and have no group: they keep their "
        f"own settings and lines but lose this {kind}'s settings and templates, and their "
        "configs change at their next poll."
        if devices
        else f"No device is in this {kind}.",
        f"Its own settings ({_plural(own, 'section')}) are deleted."
        if own
        else "It has no settings of its own.",
    ]
    if group.templates:
        names = ", ".join(t.name for t in group.templates)
        items.append(f"Its template links ({names}) are removed; the templates stay.")
    items.append("There is no undo.")
    confirmation.consequences = items
    return confirmation


def template_deletion(db: Session, template: Template) -> Confirmation:
    groups = list(template.groups)
    group_ids = {gid for g in groups for gid in subtree_group_ids(db, g.id)}
    devices = (
        db.scalar(select(func.count()).select_from(Device).where(Device.group_id.in_(group_ids)))
        if group_ids
        else 0
    )
    items = [
        f"It is attached to {_plural(len(groups), 'group')} "
        f"({', '.join(g.name for g in groups)}): the configs of "
        f"{_plural(devices or 0, 'device')} change at their next poll."
        if groups
        else "It is attached to no group: no device changes.",
        "There is no undo.",
    ]
    return Confirmation(
        title=f"Delete template {template.name}?",
        question=f"Delete the template {template.name}?",
        action=f"/templates/{template.id}/delete",
        button=f"Delete template {template.name}",
        cancel_url=f"/templates/{template.id}",
        consequences=items,
    )


def line_removal(device: Device, line: Line) -> Confirmation:
    label = device.name or device.mac
    return Confirmation(
        title=f"Remove line {line.extension}?",
        question=f"Remove the line {line.extension}@{line.registrar} from {label}?",
        action=f"/devices/{device.id}/lines/{line.id}/delete",
        button=f"Remove line {line.extension}",
        cancel_url=f"/devices/{device.id}#lines",
        consequences=[
            "The phone unregisters this account at its next config and can no longer place or "
            "take calls on it.",
            "Its stored SIP password is deleted. There is no undo.",
        ],
    )
