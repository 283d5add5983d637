"""An HTML 404 page for browsers on unknown UI paths; the JSON API keeps its JSON errors.

The app's JSON error handlers are installed after the web UI is mounted, so the page is an ASGI
middleware that swaps a JSON 404 for HTML only when a browser (``Accept: text/html``) made a
GET/HEAD outside ``/api/``. Everything else passes through untouched, streamed as before.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offhook.contract.logs import kv
from offhook.provisioning.web.core import SECURITY_HEADERS, TEMPLATES

log = logging.getLogger(__name__)

# Paths that belong to machine clients: their 404s stay JSON whatever the Accept header says.
API_PREFIX = "/api/"


def wants_html(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    if path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/"):
        return False
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    return "text/html" in Headers(scope=scope).get("accept", "")


def not_found_page(path: str) -> HTMLResponse:
    body = TEMPLATES.get_template("error.html").render(
        title="Page not found",
        message=f"There is no page at {path}.",
        admin=None,
        nav=[],
        flashes=[],
    )
    response = HTMLResponse(body, status_code=404, headers=SECURITY_HEADERS)
    response.headers["cache-control"] = "no-store"
    return response


class HtmlNotFound:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not wants_html(scope):
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_or_replace(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                if message["status"] == 404 and content_type.startswith("application/json"):
                    replaced = True
                    return
            elif replaced:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    log.info("web not found", extra=kv(path=scope.get("path", "")))
                    await not_found_page(scope.get("path", ""))(scope, receive, send)
                return
            await send(message)

        await self.app(scope, receive, send_or_replace)


def install_html_404(app: FastAPI) -> None:
    app.add_middleware(HtmlNotFound)
