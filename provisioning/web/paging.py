"""Page-at-a-time lists: ``?page=N&per=M`` with previous/next links that keep the filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from sqlalchemy import Select
from sqlalchemy.orm import Session

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE = 1_000_000  # keeps OFFSET sane whatever is typed into the address bar

T = TypeVar("T")


@dataclass(frozen=True)
class Paging:
    number: int  # 1-based
    size: int
    has_next: bool = False

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    @property
    def first_index(self) -> int:
        """1-based index of the first row on this page (for "rows 51-100")."""
        return self.offset + 1


def parse_paging(page: str, per: str) -> Paging:
    """Anything that is not a page number or a known page size falls back to the default:
    a stale bookmark still shows a list rather than an error page."""
    number = int(page) if page.isdigit() else 1
    size = int(per) if per.isdigit() and int(per) in PAGE_SIZES else DEFAULT_PAGE_SIZE
    return Paging(number=min(max(number, 1), MAX_PAGE), size=size)


def fetch_page(db: Session, query: Select[T], paging: Paging) -> tuple[list[T], Paging]:
    """One page of ``query`` (which must have a total order); one extra row tells whether a
    next page exists without a COUNT over the whole table."""
    rows = list(db.scalars(query.offset(paging.offset).limit(paging.size + 1)))
    return rows[: paging.size], Paging(paging.number, paging.size, len(rows) > paging.size)


def page_url(request: Request, number: int, path: str | None = None) -> str:
    """This request's URL with another page number; every filter stays as it was."""
    params: list[tuple[str, Any]] = [(k, v) for k, v in request.query_params.multi_items()]
    params = [(k, v) for k, v in params if k != "page"]
    if number > 1:
        params.append(("page", str(number)))
    query = urlencode(params)
    return (path or request.url.path) + ("?" + query if query else "")
