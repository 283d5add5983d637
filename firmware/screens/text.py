"""Text laid out for the panel: shared by the call screens and the feature screens."""

from __future__ import annotations


def wrap(text: str, width: int, max_lines: int) -> tuple[str, ...]:
    """Cut text into lines of at most ``width`` characters (at spaces where possible)."""
    lines: list[str] = []
    rest = text
    while rest and len(lines) < max_lines:
        if len(rest) <= width:
            lines.append(rest)
            break
        cut = rest.rfind(" ", 0, width + 1)
        cut = cut if cut > 0 else width
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return tuple(lines)
