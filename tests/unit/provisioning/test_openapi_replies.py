"""Every successful JSON answer under /api/v1 is documented in the OpenAPI document by a named
schema (a Pydantic model), not an anonymous ``{}`` or ``additionalProperties`` object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offhook.provisioning.app import create_app
from offhook.provisioning.settings import settings_from_env

NO_BODY = {"204", "304"}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from dataclasses import replace

    data: Path = tmp_path_factory.mktemp("openapi")
    settings = replace(
        settings_from_env(),
        data_dir=data,
        key_file=data / "secret.key",
        db_url=f"sqlite:///{data / 'p.db'}",
    )
    return create_app(settings).openapi()


def _component(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any] | None:
    ref = schema.get("$ref", "")
    prefix = "#/components/schemas/"
    return spec["components"]["schemas"].get(ref[len(prefix) :]) if ref.startswith(prefix) else None


def _problem(spec: dict[str, Any], schema: dict[str, Any] | None) -> str:
    """Why ``schema`` does not document a reply ('' when it does)."""
    if not schema:
        return "no schema"
    if schema.get("type") == "array":
        return _problem(spec, schema.get("items"))
    found = _component(spec, schema)
    if found is None:
        return f"not a named model: {schema}"
    if not found.get("properties") and not found.get("description"):
        return f"model {schema['$ref']} has neither fields nor a description"
    return ""


def _replies(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(route, problem) for every 2xx reply of an /api/v1 route."""
    found = []
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            for status, reply in operation["responses"].items():
                if not status.startswith("2") or status in NO_BODY:
                    continue
                route = f"{method.upper()} {path} {status}"
                content = reply.get("content", {})
                if not content:
                    found.append((route, "no content documented"))
                    continue
                for media, body in content.items():
                    if media == "application/json":
                        found.append((route, _problem(spec, body.get("schema"))))
    return found


def test_every_api_v1_success_reply_has_a_named_schema(openapi: dict[str, Any]) -> None:
    replies = _replies(openapi)
    assert len(replies) > 50  # the walk reached the admin and device routers
    missing = [f"{route}: {problem}" for route, problem in replies if problem]
    assert missing == [], "\n".join(missing)


def test_the_check_catches_an_undocumented_reply(openapi: dict[str, Any]) -> None:
    """The walk above would see a route that answers a bare dict."""
    spec = {
        "paths": {
            "/api/v1/x": {
                "get": {
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"type": "object"}}}},
                        "202": {"description": "no body documented"},
                    }
                }
            }
        },
        "components": {"schemas": {}},
    }
    assert [problem != "" for _route, problem in _replies(spec)] == [True, True]
