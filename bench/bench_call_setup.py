"""Call set-up time through Kamailio: our phone vs baresip, same Kamailio, same run.

Figures:
- phone process: the last digit pressed on the keypad (the control API's key path, as the user
  dials on a real phone) -> the phone's "call state ... confirmed" log line, through the whole
  ``offhook sim`` process (supervisor, runtime loop, Phone, dial plan, SIP engine);
- engine makeCall -> CONFIRMED, measured inside the engine's owner thread;
- engine submit() -> CONFIRMED event on the caller's thread (adds the queue hand-over);
- baresip ``dial`` over ctrl_tcp -> CALL_ESTABLISHED event (includes the ctrl_tcp round trip).
All callers use digest auth on INVITE, PCMU and an auto-answering baresip callee (UDP); the
callers' own transport is UDP, then TCP (where TCP_NODELAY matters), then TLS. Phone, engine
and baresip calls alternate so that all see the same load. The phone's log stamps have
millisecond resolution (truncated), so its figure reads up to 1 ms short.
"""

from __future__ import annotations

import calendar
import os
import statistics
import tempfile
import time
from pathlib import Path

from offhook.contract.config import parse_config
from offhook.firmware.events import CallState, Hangup, MakeCall
from offhook.firmware.sim import SimPhone, sim_config
from offhook.firmware.sip import SipEngine
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.sip_phone import EventRecorder, account, phone_config, running_engine

CALLS = int(os.environ.get("OFFHOOK_BENCH_CALLS", "25"))
WARMUP = 3
TRANSPORTS = os.environ.get("OFFHOOK_BENCH_TRANSPORTS", "udp,tcp,tls").split(",")


def _peer(kam: KamailioServer, base: Path, user: str, transport: str = "udp") -> BaresipPeer:
    return BaresipPeer(
        base / f"{user}-{transport}", user=user, password=DEFAULT_USERS[user],
        registrar=kam.tls_domain if transport == "tls" else kam.domain, codecs="PCMU",
        transport=transport, ca_file=kam.certificates.ca_cert,
    )  # fmt: skip


def _sim_phone(kam: KamailioServer, base: Path, user: str, transport: str) -> SimPhone:
    """``offhook sim --headless`` with one account on ``transport`` (PCMU, as the peers)."""
    data = sim_config(f"bench-{transport}", user, DEFAULT_USERS[user], kam.domain).model_dump()
    certs = kam.certificates
    data["accounts"] = [account(kam, user, transport, register_expires_s=60)]
    data["sip"].update(
        codecs=["PCMU"], tls_ca_file=str(certs.ca_cert),
        tls_cert_file=str(certs.cert), tls_key_file=str(certs.key),
    )  # fmt: skip
    return SimPhone(base / f"sim-{transport}", parse_config(data, source="bench"))


class PhoneLog:
    """The phone's log lines (``SimPhone.log_path``), read as they are written."""

    def __init__(self, sim: SimPhone) -> None:
        self.file = sim.log_path.open("rb")
        self.file.seek(0, os.SEEK_END)
        self.partial = b""

    def wait_line(self, *needles: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self.file.readline()
            if not chunk:
                time.sleep(0.0005)
                continue
            self.partial += chunk
            if not chunk.endswith(b"\n"):
                continue  # the rest of the line is still being written
            line, self.partial = self.partial.decode(errors="replace"), b""
            if all(n in line for n in needles):
                return line
        raise RuntimeError(f"the phone never logged a line with {needles}")

    def close(self) -> None:
        self.file.close()


def _stamp(line: str) -> float:
    """``2026-11-23T02:00:00.123Z ...`` -> seconds since the epoch."""
    stamp = line.split(" ", 1)[0].rstrip("Z")
    whole, millis = stamp.split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


def _phone_call(sim: SimPhone, log: PhoneLog, callee: str) -> float:
    """Off hook, dial ``callee`` on the keypad: last key press -> CONFIRMED, in ms."""
    sim.client.hook(True)
    sim.client.keys(callee[:-1])
    pressed = time.time()
    sim.client.keys(callee[-1])  # the digit map completes the number: the call goes out
    confirmed = _stamp(log.wait_line("call state", "state=confirmed"))
    sim.client.hook(False)
    log.wait_line("call state", "state=disconnected")
    return (confirmed - pressed) * 1000


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
    """Phone, engine and baresip calls alternate, so all see the same load on a shared machine."""
    phone_times, inside, end_to_end, peer_times = [], [], [], []
    config = phone_config(kam, [account(kam, "1001", transport)], codecs=["PCMU"])
    sim = _sim_phone(kam, base, "1004", transport)
    registrar = kam.tls_domain if transport == "tls" else kam.domain
    sim.start()
    try:
        sim.wait_registered(timeout=60)
        log = PhoneLog(sim)
        with (
            _peer(kam, base, "1003", transport) as caller,
            running_engine(config) as (engine, events),
        ):
            for i in range(WARMUP + CALLS):
                phone = _phone_call(sim, log, "1002")
                ours = _engine_call(engine, events, "1002")
                theirs = _baresip_call(caller, f"sip:1002@{registrar}")
                if i >= WARMUP:
                    phone_times.append(phone)
                    inside.append(ours[0])
                    end_to_end.append(ours[1])
                    peer_times.append(theirs)
        log.close()
    finally:
        sim.stop()
    return [statistics.median(x) for x in (phone_times, inside, end_to_end, peer_times)]


def main() -> int:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-setup-") as tmp:
        base = Path(tmp)
        kam = KamailioServer(base / "kamailio")
        for user, password in DEFAULT_USERS.items():
            kam.add_user(user, password)
        with kam, _peer(kam, base, "1002") as callee:
            for transport in TRANSPORTS:
                results[transport] = _measure(kam, base, transport)
            assert callee.events  # the callee really answered
    print(f"calls per side and transport: {CALLS} (after {WARMUP} warm-up), PCMU, digest auth")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for transport, (phone, ours, e2e, theirs) in results.items():
        print(f"[{transport}] phone process last key->CONFIRMED median: {phone:.2f} ms")
        print(f"[{transport}] engine makeCall->CONFIRMED median: {ours:.2f} ms")
        print(f"[{transport}] engine submit->CONFIRMED event median: {e2e:.2f} ms")
        print(f"[{transport}] peer baresip dial->CALL_ESTABLISHED median: {theirs:.2f} ms")
        print(f"[{transport}] ratio phone process/baresip: {phone / theirs:.2f}x (goal <= 1.0x); "
              f"engine/baresip: {ours / theirs:.2f}x; submit->event: {e2e / theirs:.2f}x")  # fmt: skip  # noqa: E501
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
