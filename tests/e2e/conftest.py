"""End-to-end fixtures: Kamailio, simulated phones (``offhook sim --headless``) and Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from offhook.firmware.sim import SimPhone, sim_config, stop_all
from tests.fixtures.chromium import browser  # noqa: F401
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.tls import tls_certificates  # noqa: F401

PhoneFactory = Callable[..., SimPhone]


@pytest.fixture(scope="module")
def sim_phones(
    tmp_path_factory: pytest.TempPathFactory,
    kamailio_server: KamailioServer,  # noqa: F811
) -> Iterator[PhoneFactory]:
    """Start simulated phones registered to the module's Kamailio; all stopped at the end."""
    started: list[SimPhone] = []

    def start(name: str, user: str, display_name: str = "", test_hooks: bool = True) -> SimPhone:
        config = sim_config(
            name, user, DEFAULT_USERS[user], kamailio_server.domain, display_name=display_name
        )
        phone = SimPhone(tmp_path_factory.mktemp(name), config, test_hooks=test_hooks)
        started.append(phone)
        phone.start()
        return phone

    yield start
    stop_all(started)


def dump_logs(phones: list[SimPhone]) -> str:
    return "\n".join(f"--- {p.name}\n{p.log_text()[-4000:]}" for p in phones)


@pytest.fixture
def phone_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[list[SimPhone]]:
    """Tests append their phones; on failure the tail of each phone's log is printed."""
    phones: list[SimPhone] = []
    yield phones
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(dump_logs(phones))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
