"""Shared steps of the SIP call tests: baresip peers registered on the Kamailio fixture, placing a
call from the engine, and waiting for the media change an action causes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from offhook.firmware.events import CallMediaChanged, CallState, CallStateChanged, MakeCall
from offhook.firmware.sip import SipEngine
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.sip_phone import EventRecorder, account, phone_config, running_engine


def peer(kam: KamailioServer, tmp_path: Path, user: str, **kwargs: object) -> BaresipPeer:
    return BaresipPeer(
        tmp_path / f"baresip-{user}",
        user=user,
        password=DEFAULT_USERS[user],
        registrar=kam.domain,
        **kwargs,  # type: ignore[arg-type]
    )


def place_call(engine: SipEngine, events: EventRecorder, target: str) -> CallStateChanged:
    """Call ``target`` from account 0 and wait until that call is confirmed."""
    mark = events.mark()
    engine.submit(MakeCall(0, target))
    return events.wait_call_state(CallState.CONFIRMED, start=mark)


def media_change_after(events: EventRecorder, action: Callable[[], object]) -> CallMediaChanged:
    """Run ``action`` (a hold or resume on either side) and return the media change it caused."""
    mark = events.mark()
    action()
    return events.wait_for(lambda e: isinstance(e, CallMediaChanged), start=mark)


@contextlib.contextmanager
def phone_and_two_peers(
    kam: KamailioServer, tmp_path: Path
) -> Iterator[tuple[SipEngine, EventRecorder, BaresipPeer, BaresipPeer]]:
    """The engine registered as 1001, with baresip peers 1002 and 1003 (started first)."""
    config = phone_config(kam, [account(kam, "1001")])
    with (
        peer(kam, tmp_path, "1002") as first,
        peer(kam, tmp_path, "1003") as second,
        running_engine(config) as (engine, events),
    ):
        yield engine, events, first, second
