"""What every request body of the device and admin APIs shares, and the error body they answer.

- ``RequestBody``: no NUL character anywhere (keys and values, nested settings included: PostgreSQL
  cannot store one in text, and SQLite would truncate it on the way out), no NaN or infinity
  (JSON has neither; Python's parser accepts them), so such input is a 422 on both databases.
- ``Int32`` / ``Id32``: integers that fit the schema's INTEGER columns (PostgreSQL int4): a
  larger one is a 422, not a database error.
- ``ErrorBody`` and ``ERROR_RESPONSES``: the ``{"detail", "code"}`` body of every refusal, as
  published in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

INT32_MAX = 2**31 - 1
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Count32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
Id32 = Annotated[int, Path(ge=1, le=INT32_MAX)]


def nul_path(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (a JSON-like tree) a string holds a NUL character, else None."""
    if isinstance(value, str):
        return (where or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and "\x00" in key:
                return (where or "body") + " (a key)"
            found = nul_path(item, here)
            if found:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = nul_path(item, f"{where}[{index}]")
            if found:
                return found
    return None


class RequestBody(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = nul_path(data)
        if where:
            raise ValueError(f"{where}: text must not contain a NUL character (\\u0000)")
        return data


class ErrorBody(BaseModel):
    detail: str
    code: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    names = {
        401: "missing or invalid credential",
        403: "not allowed",
        404: "no such object",
        409: "conflicts with the current state",
        413: "request body too large",
        422: "invalid input",
        503: "database unavailable or server busy, retry later",
    }
    return {s: {"model": ErrorBody, "description": names[s]} for s in statuses}
