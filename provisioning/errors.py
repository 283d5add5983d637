"""The one error type handlers raise: rendered as ``{"detail": ..., "code": ...}``."""

from __future__ import annotations

from offhook.contract.errors import OffhookError


class ApiError(OffhookError):
    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        super().__init__(f"{status} {code}: {detail}")
