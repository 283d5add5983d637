"""Groups and sites as a tree with device counts rolled up from every group below: the web
UI's Groups page, ``GET /api/v1/admin/groups/tree`` and ``offhook fleet groups``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offhook.provisioning.models import DEVICE_STATUSES, Device, Group


@dataclass
class GroupNode:
    id: int
    name: str
    kind: str
    templates: list[str]
    own_settings: int  # sections of settings set on the group itself
    devices: int = 0  # in this group itself
    by_status: dict[str, int] = field(default_factory=dict)  # this group and all below it
    children: list[GroupNode] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Devices in this group and every group below it."""
        return sum(self.by_status.values())

    def walk(self, depth: int = 0) -> list[tuple[int, GroupNode]]:
        out = [(depth, self)]
        for child in self.children:
            out.extend(child.walk(depth + 1))
        return out


def group_tree(db: Session) -> list[GroupNode]:
    """The roots (groups without a parent), children by name; a parent loop (not creatable
    through operations, which refuses one) would leave its groups out rather than hang."""
    groups = list(db.scalars(select(Group).order_by(Group.name)))
    nodes = {
        g.id: GroupNode(
            id=g.id,
            name=g.name,
            kind=g.kind,
            templates=[t.name for t in g.templates],
            own_settings=len(g.settings or {}),
            by_status=dict.fromkeys(DEVICE_STATUSES, 0),
        )
        for g in groups
    }
    own: dict[int, dict[str, int]] = {}
    rows = db.execute(
        select(Device.group_id, Device.status, func.count())
        .where(Device.group_id.is_not(None))
        .group_by(Device.group_id, Device.status)
    )
    for group_id, status, count in rows:
        if group_id is not None:
            own.setdefault(group_id, {})[status] = count
    parents = {g.id: g.parent_id for g in groups}
    roots: list[GroupNode] = []
    for g in groups:
        if g.parent_id is None or g.parent_id not in nodes:
            roots.append(nodes[g.id])
        else:
            nodes[g.parent_id].children.append(nodes[g.id])
    for group_id, counts in own.items():
        if group_id not in nodes:
            continue
        nodes[group_id].devices = sum(counts.values())
        seen: set[int] = set()
        current: int | None = group_id
        while current is not None and current in nodes and current not in seen:
            seen.add(current)
            for status, count in counts.items():
                nodes[current].by_status[status] = nodes[current].by_status.get(status, 0) + count
            current = parents.get(current)
    return roots


def ungrouped_count(db: Session) -> int:
    return int(
        db.scalar(select(func.count()).select_from(Device).where(Device.group_id.is_(None))) or 0
    )
