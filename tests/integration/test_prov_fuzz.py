"""Schemathesis against the real server process, on SQLite and on PostgreSQL: requests generated
from the published OpenAPI document for every device and admin operation, valid ones and invalid
ones. No answer may be a 5xx, and every answer must be one the document publishes (status code
and body schema). Bounded: OFFHOOK_FUZZ_EXAMPLES examples per operation and mode (default 5,
derandomized so CI runs the same cases; raise it locally to search further)."""
# ruff: noqa: F811  (pytest fixtures imported by name are redefined as parameters)

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.postgres import postgres_cluster  # noqa: F401 (fixture)
from tests.fixtures.provisioning_server import (  # noqa: F401 (fixture)
    ProvisioningServer,
    provisioning_server,
)

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("OFFHOOK_FUZZ_EXAMPLES", "5"))
DEVICE_PREFIX = "/api/v1/device"


def _checks(mode: GenerationMode) -> list[Callable[..., Any]]:
    # An invalid request may be refused with any published status; a valid one must get one
    # that its operation documents.
    if mode == GenerationMode.NEGATIVE:
        return [not_a_server_error, response_schema_conformance]
    return [not_a_server_error, response_schema_conformance, status_code_conformance]


def test_generated_requests_get_published_answers_and_never_a_5xx(
    provisioning_server: ProvisioningServer,
) -> None:
    server = provisioning_server
    device = server.enroll("b8:27:eb:00:f0:01")
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # The device API first: the admin operations may revoke or delete the fuzzing device.
    operations.sort(key=lambda op: (not op.path.startswith(DEVICE_PREFIX), op.path, op.method))
    assert len(operations) > 40
    failures: dict[str, str] = {}
    for operation in operations:
        auth = (
            device.authorization
            if operation.path.startswith(DEVICE_PREFIX)
            else f"Bearer {server.admin_token}"
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, server.base_url, auth, failures)
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in sorted(failures.items()))


def _fuzz(
    operation: Any, mode: GenerationMode, base_url: str, auth: str, failures: dict[str, str]
) -> None:
    """EXAMPLES generated requests to one operation; the first failure of each check is kept."""
    checks = _checks(mode)
    name = f"{operation.method.upper()} {operation.path} ({mode}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case: Any) -> None:
        case.headers = {"Authorization": auth, **(case.headers or {})}
        response = case.call(base_url=base_url, timeout=60)
        for check in checks:
            try:
                case.validate_response(response, checks=[check])
            except BaseException as exc:  # schemathesis raises exception groups
                key = f"{name}, {check.__name__})"
                failures.setdefault(key, f"{response.status_code}: {exc}"[:1500])

    try:
        exercise()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (no parameters, no body).
        if mode == GenerationMode.POSITIVE:
            raise
