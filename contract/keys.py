"""Key names: the digits and the function keys a desk phone has. Board profiles map matrix positions
to these, the phone's core reacts to them and the control API accepts them."""

from __future__ import annotations

DIGIT_KEYS = frozenset("0123456789*#")
FUNCTION_KEYS = frozenset(
    {
        "hold", "transfer", "conference", "redial", "dnd", "voicemail", "mute", "speaker",
        "headset", "vol_up", "vol_down", "up", "down", "left", "right", "ok", "cancel",
        "history", "phonebook", "menu", "line1", "line2", "softkey1", "softkey2", "softkey3",
        "softkey4", "messages",
    }
    # the line keys a BLF entry can watch an extension with (config.blf[n] is key blf<n+1>)
    | {f"blf{n}" for n in range(1, 9)}
)  # fmt: skip
