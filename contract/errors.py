"""The one root of offhook's own exceptions.

Every error the project raises on purpose derives from :class:`OffhookError`, so a front end
(the CLIs, the control API, the server's handlers) can tell "offhook refused this, here is why"
from a programming error with one ``except`` clause. Subclasses keep a built-in base as well
(``ValueError`` for bad input, ``RuntimeError`` for a failed operation, ``ConnectionError`` for
the network) so that callers written against those still work.
"""

from __future__ import annotations


class OffhookError(Exception):
    """An error offhook raises on purpose, with a message meant for the user."""
