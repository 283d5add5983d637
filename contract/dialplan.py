"""Digit maps (as on MGCP/SIP desk phones): decide when the dialled digits make a number to send.

Syntax: alternatives separated by ``|``; ``0-9 * #`` match themselves, ``x`` any digit, ``[2-9]`` or
``[135]`` a set, ``.`` repeats the element before it zero or more times, a trailing ``T`` means the
number is complete only once the inter-digit timer runs out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from offhook.contract.errors import OffhookError

DIGITS = "0123456789"
DIALABLE = DIGITS + "*#"


class DigitMapError(OffhookError, ValueError):
    pass


class Decision(enum.Enum):
    WAIT = "wait"  # more digits may come: keep collecting (timer running)
    SEND = "send"  # a complete number: place the call now
    REJECT = "reject"  # no pattern can match: play reorder, show "invalid number"


@dataclass(frozen=True)
class _Element:
    chars: frozenset[str]
    repeat: bool


@dataclass(frozen=True)
class _Pattern:
    elements: tuple[_Element, ...]
    timer: bool  # ends in T


def _parse_pattern(text: str) -> _Pattern:
    elements: list[_Element] = []
    timer = False
    i = 0
    while i < len(text):
        ch = text[i]
        if timer:
            raise DigitMapError(f"'T' must be last in {text!r}")
        if ch in DIALABLE:
            elements.append(_Element(frozenset(ch), False))
        elif ch in "xX":
            elements.append(_Element(frozenset(DIGITS), False))
        elif ch == "[":
            end = text.find("]", i)
            if end < 0:
                raise DigitMapError(f"unclosed '[' in {text!r}")
            elements.append(_Element(_parse_set(text[i + 1 : end], text), False))
            i = end
        elif ch == ".":
            if not elements or elements[-1].repeat:
                raise DigitMapError(f"'.' must follow a digit, x or [set] in {text!r}")
            elements[-1] = _Element(elements[-1].chars, True)
        elif ch in "Tt":
            timer = True
        else:
            raise DigitMapError(f"unexpected {ch!r} in {text!r}")
        i += 1
    if not elements:
        raise DigitMapError(f"empty pattern {text!r}")
    return _Pattern(tuple(elements), timer)


def _parse_set(body: str, pattern: str) -> frozenset[str]:
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if lo not in DIGITS or hi not in DIGITS or lo > hi:
                raise DigitMapError(f"bad range {lo}-{hi} in {pattern!r}")
            chars.update(str(d) for d in range(int(lo), int(hi) + 1))
            i += 3
        elif body[i] in DIALABLE:
            chars.add(body[i])
            i += 1
        else:
            raise DigitMapError(f"unexpected {body[i]!r} in [{body}] of {pattern!r}")
    if not chars:
        raise DigitMapError(f"empty [] in {pattern!r}")
    return frozenset(chars)


def _positions_after(pattern: _Pattern, dialled: str) -> set[int]:
    """Positions in the pattern reachable after consuming all of ``dialled`` (NFA simulation)."""

    def closure(positions: set[int]) -> set[int]:
        # A repeated element may match zero times: its successor is reachable too.
        out = set(positions)
        stack = list(positions)
        while stack:
            p = stack.pop()
            if p < len(pattern.elements) and pattern.elements[p].repeat and p + 1 not in out:
                out.add(p + 1)
                stack.append(p + 1)
        return out

    current = closure({0})
    for ch in dialled:
        nxt: set[int] = set()
        for p in current:
            if p < len(pattern.elements) and ch in pattern.elements[p].chars:
                nxt.add(p if pattern.elements[p].repeat else p + 1)
        current = closure(nxt)
        if not current:
            break
    return current


class DigitMap:
    def __init__(self, text: str) -> None:
        self.text = text
        alternatives = [a.strip() for a in text.strip().strip("()").split("|")]
        if not text.strip() or any(a == "" for a in alternatives):
            raise DigitMapError(f"empty alternative in digit map {text!r}")
        self.patterns = tuple(_parse_pattern(a) for a in alternatives)

    def decide(self, dialled: str, timed_out: bool = False) -> Decision:
        complete_now = complete_on_timer = extend_explicit = extend_timed = False
        for pattern in self.patterns:
            positions = _positions_after(pattern, dialled)
            end = len(pattern.elements)
            if end in positions:
                if pattern.timer:
                    complete_on_timer = True
                else:
                    complete_now = True
            if any(p < end for p in positions):
                if pattern.timer:
                    extend_timed = True
                else:
                    extend_explicit = True
        if timed_out:
            return Decision.SEND if (complete_now or complete_on_timer) else Decision.REJECT
        # A timed catch-all (``x.T``) must not delay a number an explicit pattern has completed.
        if complete_now and not extend_explicit:
            return Decision.SEND
        if complete_now or complete_on_timer or extend_explicit or extend_timed:
            return Decision.WAIT
        return Decision.REJECT
