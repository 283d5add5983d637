"""A PIL image as PNG bytes (the control API's screen.png)."""

from __future__ import annotations

import io
from typing import Any


def png_of(image: Any) -> bytes:
    buf = io.BytesIO()
    image.convert("1" if image.mode == "1" else "RGB").save(buf, format="PNG")
    return buf.getvalue()
