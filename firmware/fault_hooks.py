"""Faults the end-to-end tests inject (never in production): through the control API
(``--test-hooks``), they prove the supervisor's recovery on a real phone process; through the
image (``offhook image build --test-registrar``), a firmware that cannot register, for the
update rollback test."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from offhook.contract.fault_env import TEST_REGISTRAR_ENV
from offhook.firmware import events as ev
from offhook.firmware.ports import SipPort

log = logging.getLogger("offhook.phone")


def test_registrar(env: dict[str, str] | None = None) -> str:
    """The test-only registrar override, "" on every real phone."""
    return (os.environ if env is None else env).get(TEST_REGISTRAR_ENV, "")


class EngineHangHook:
    """Test hook: make the SIP engine's owner thread block for good (a hung pjsua2 stand-in).

    The engine calls our event callback on its owner thread. Once armed, the next such call
    sleeps forever; a MakeCall with an empty target makes the engine report a failure at once,
    which is that call. The engine loop then stops turning and the heartbeats stop.
    """

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.engine: SipPort | None = None  # set once the engine exists (it takes wrap's result)

    def wrap(self, on_event: Callable[[ev.Event], None]) -> Callable[[ev.Event], None]:
        def on_engine_event(event: ev.Event) -> None:
            if self.armed.is_set() and threading.current_thread().name == "sip-engine":
                log.warning("test hook: SIP engine thread now hangs")
                threading.Event().wait()
            on_event(event)

        return on_engine_event

    def __call__(self) -> str:
        if self.engine is None:
            raise RuntimeError("no SIP engine to hang")
        self.armed.set()
        self.engine.submit(ev.MakeCall(0, ""))
        return "sip engine hang requested"
