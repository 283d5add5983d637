"""Letters from a phone keypad by multi-tap (ITU E.161): each press of the same key moves to its
next letter, another key (or a pause) keeps the letter. The digit itself comes after its letters,
so a number can be typed too."""

from __future__ import annotations

KEY_LETTERS = {
    "1": ".1",
    "2": "abc2",
    "3": "def3",
    "4": "ghi4",
    "5": "jkl5",
    "6": "mno6",
    "7": "pqrs7",
    "8": "tuv8",
    "9": "wxyz9",
    "0": " 0",
}


def letters_of(key: str) -> str:
    return KEY_LETTERS.get(key, "")


def tap(text: str, tap_key: str, tap_index: int, key: str) -> tuple[str, str, int]:
    """One press of ``key``: the new (committed text, tap key, tap index)."""
    if key == tap_key:
        return text, key, (tap_index + 1) % len(letters_of(key))
    committed = text + (letters_of(tap_key)[tap_index] if tap_key else "")
    return committed, key, 0


def commit(text: str, tap_key: str, tap_index: int) -> str:
    return text + (letters_of(tap_key)[tap_index] if tap_key else "")
