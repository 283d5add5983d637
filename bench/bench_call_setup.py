"""Call set-up time through Kamailio: our SipEngine vs baresip, same Kamailio, same run.

Figures:
- engine makeCall -> CONFIRMED, measured inside the engine's owner thread (what the brief's
  goal refers to);
- engine submit() -> CONFIRMED event on the caller's thread (adds the queue hand-over);
- baresip ``dial`` over ctrl_tcp -> CALL_ESTABLISHED event (includes the ctrl_tcp round trip).
Both callers use digest auth on INVITE, PCMU and an auto-answering baresip callee (UDP); the
callers' own transport is UDP, then TCP (where TCP_NODELAY matters). Engine and baresip calls
alternate so that both see the same load.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from offhook.firmware.events import CallState, Hangup, MakeCall
from offhook.firmware.sip import SipEngine
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.sip_phone import EventRecorder, account, phone_config, running_engine

CALLS = 25
WARMUP = 3


def _peer(kam: KamailioServer, base: Path, user: str, transport: str = "udp") -> BaresipPeer:
    return BaresipPeer(
        base / f"{user}-{transport}", user=user, password=DEFAULT_USERS[user],
        registrar=kam.domain, codecs="PCMU", transport=transport,
    )  # fmt: skip


def _engine_call(engine: SipEngine, events: EventRecorder, callee: str) -> tuple[float, float]:
    """(makeCall->CONFIRMED inside the engine, submit->CONFIRMED event) in ms."""
    mark = events.mark()
    started = time.perf_counter()
    engine.submit(MakeCall(0, callee))
    call = events.wait_call_state(CallState.CONFIRMED, start=mark)
    elapsed = (time.perf_counter() - started) * 1000
    setup_ms = _wait_setup_ms(engine, call.call_id)
    engine.submit(Hangup(call.call_id))
    events.wait_call_state(CallState.DISCONNECTED, call.call_id, start=mark)
    return setup_ms, elapsed


def _wait_setup_ms(engine: object, call_id: int) -> float:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        for info in engine.calls_info():  # type: ignore[attr-defined]
            if info["id"] == call_id and info["setup_ms"] is not None:
                return float(info["setup_ms"])
        time.sleep(0.001)
    raise RuntimeError(f"call {call_id} never reported its set-up time")


def _baresip_call(caller: BaresipPeer, callee_uri: str) -> float:
    start_index = len(caller.events)
    started = time.perf_counter()
    caller.dial(callee_uri)
    caller.wait_event("CALL_ESTABLISHED", start=start_index)
    elapsed = (time.perf_counter() - started) * 1000
    caller.hangup()
    caller.wait_event("CALL_CLOSED", start=start_index)
    return elapsed


def _measure(kam: KamailioServer, base: Path, transport: str) -> list[float]:
    """Engine and baresip calls alternate, so both see the same load on a shared machine."""
    inside, end_to_end, peer_times = [], [], []
    config = phone_config(kam, [account(kam, "1001", transport)], codecs=["PCMU"])
    with _peer(kam, base, "1003", transport) as caller, running_engine(config) as (engine, events):
        for i in range(WARMUP + CALLS):
            ours = _engine_call(engine, events, "1002")
            theirs = _baresip_call(caller, f"sip:1002@{kam.domain}")
            if i >= WARMUP:
                inside.append(ours[0])
                end_to_end.append(ours[1])
                peer_times.append(theirs)
    return [statistics.median(x) for x in (inside, end_to_end, peer_times)]


def main() -> int:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-setup-") as tmp:
        base = Path(tmp)
        kam = KamailioServer(base / "kamailio")
        for user, password in DEFAULT_USERS.items():
            kam.add_user(user, password)
        with kam, _peer(kam, base, "1002") as callee:
            for transport in ("udp", "tcp"):
                results[transport] = _measure(kam, base, transport)
            assert callee.events  # the callee really answered
    print(f"calls per side and transport: {CALLS} (after {WARMUP} warm-up), PCMU, digest auth")
    for transport, (ours, e2e, theirs) in results.items():
        print(f"[{transport}] engine makeCall->CONFIRMED median: {ours:.2f} ms")
        print(f"[{transport}] engine submit->CONFIRMED event median: {e2e:.2f} ms")
        print(f"[{transport}] peer baresip dial->CALL_ESTABLISHED median: {theirs:.2f} ms")
        print(f"[{transport}] ratio engine/baresip: {ours / theirs:.2f}x (goal <= 1.2x); "
              f"submit->event: {e2e / theirs:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
