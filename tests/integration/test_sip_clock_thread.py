"""The conference clock thread's Python state (firmware/sip/audio_port.ClockThreadState), in a
real call through Kamailio to baresip: kept from one frame callback to the next during the call
(a state made and destroyed per callback was a fifth of the call's CPU), and given back before
the clock stops (a thread that ended holding one would leak it, once per call)."""

from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path

import pytest

from offhook.firmware.events import CallState, Hangup
from offhook.firmware.sip.sine import SineEndpoint
from tests.fixtures.kamailio import KamailioServer, kamailio_server  # noqa: F401
from tests.fixtures.sip_phone import account, phone_config, running_engine
from tests.fixtures.tls import tls_certificates  # noqa: F401
from tests.fixtures.waiting import wait_until
from tests.integration.sip_peers import peer, place_call

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def python_thread_states() -> int:
    """How many thread states the interpreter holds (live threads and any leaked ones)."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    count, state = 0, api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Get())
    while state:
        count += 1
        state = api.PyThreadState_Next(state)
    return count


class CountingSine(SineEndpoint):
    """Counts capture reads in a thread-local: the count survives only while the callback
    thread keeps its Python state (a fresh state starts a fresh local)."""

    def __init__(self) -> None:
        super().__init__(1000.0)
        self.local = threading.local()
        self.longest_run = 0

    def read_capture_frame(self) -> bytes:
        self.local.frames = getattr(self.local, "frames", 0) + 1
        self.longest_run = max(self.longest_run, self.local.frames)
        return super().read_capture_frame()


def test_the_clock_thread_keeps_its_state_in_a_call_and_gives_it_back(
    kamailio_server: KamailioServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    sine = CountingSine()
    config = phone_config(kamailio_server, [account(kamailio_server, "1001")], codecs=["PCMU"])
    with (
        peer(kamailio_server, tmp_path, "1002", codecs="PCMU"),
        running_engine(config, sine) as (engine, events),
    ):
        idle_states = python_thread_states()
        for _ in range(2):  # a second call: the first one left nothing behind
            mark = events.mark()
            call = place_call(engine, events, "1002")
            wait_until(lambda: sine.longest_run >= 25, "half a second of frames", timeout=10)
            engine.submit(Hangup(call.call_id))
            events.wait_call_state(CallState.DISCONNECTED, call.call_id, start=mark)
            wait_until(lambda: not engine.calls_info(), "the call's end", timeout=10)
            time.sleep(0.3)  # the engine stops the clock on its next turn
            assert python_thread_states() == idle_states
