"""``/docs``: Swagger UI for the REST API, served from the ``swagger-ui-py`` package.

Nothing comes from a CDN, so the page works on a network without Internet access, and its
Content-Security-Policy allows only this server (Swagger UI's CSS draws its icons from data:
URLs). FastAPI's own ``/docs`` page loads Swagger UI from a CDN and starts it with an inline
script, which such a policy forbids, so it is turned off and this router replaces it.

Why swagger-ui-py: it ships Swagger UI 5, which reads the OpenAPI 3.1 documents FastAPI writes.
The ``swagger-ui-bundle`` package ships Swagger UI 4.15, which refuses them ("Unable to render
this definition"). Only the package's static files are used; its framework glue is not
imported.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS_PREFIX = "/docs/assets"
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)
_ASSET_TYPES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
# Our start-up script (a file, not inline: the policy allows no inline script).
_INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: document.getElementById("swagger-ui").dataset.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null, // the default badge asks validator.swagger.io
  });
});
"""


def _assets_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the swagger-ui-py package is not installed (pip install offhook[server])"
        )
    return Path(spec.submodule_search_locations[0]) / "static"


def _headers(cache: str) -> dict[str, str]:
    return {
        "content-security-policy": DOCS_CSP,
        "x-content-type-options": "nosniff",
        "cache-control": cache,
    }


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} - API</title>
<link rel="icon" type="image/png" href="{ASSETS_PREFIX}/favicon-32x32.png">
<link rel="stylesheet" href="{ASSETS_PREFIX}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="{html.escape(openapi_url)}"></div>
<script src="{ASSETS_PREFIX}/swagger-ui-bundle.js"></script>
<script src="{ASSETS_PREFIX}/init.js"></script>
</body>
</html>
"""

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers=_headers("no-cache"))

    @router.get(ASSETS_PREFIX + "/init.js")
    def swagger_init() -> Response:
        return Response(_INIT_JS, media_type="text/javascript", headers=_headers("max-age=3600"))

    @router.get(ASSETS_PREFIX + "/{name}")
    def swagger_asset(name: str) -> FileResponse:
        media_type = _ASSET_TYPES.get(name)
        if media_type is None:
            raise HTTPException(404, detail=f"no such asset {name!r}")
        return FileResponse(
            _assets_dir() / name, media_type=media_type, headers=_headers("max-age=3600")
        )

    return router
