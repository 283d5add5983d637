"""The UI's one stylesheet and one small script, served from the package (no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from offhook.provisioning.web.core import NotFound, WebRoute

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript"}
router = APIRouter(route_class=WebRoute)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or path.suffix not in MEDIA_TYPES or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(
        path, media_type=MEDIA_TYPES[path.suffix], headers={"cache-control": "max-age=3600"}
    )
