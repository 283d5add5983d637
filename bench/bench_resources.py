"""Resources of a registered phone engine process vs a registered baresip, same run.

- idle RSS (VmRSS) after registration and a short settle;
- idle CPU seconds per minute (``OFFHOOK_BENCH_IDLE_S``, default 20 s: a few ticks of 10 ms
  would otherwise be all there is to count);
- the same for the whole phone process of ``offhook sim --headless`` (engine, Phone, screens,
  ALSA on the null device, control API, provisioning client), with the native extensions it
  has loaded at idle;
- CPU seconds per call-minute: a real call through Kamailio to an auto-answering baresip, both
  callers sending a 1 kHz sine (ours through the Python AudioMediaPort), PCMU, scaled to 60 s.
The engine runs as ``python -m offhook.firmware.sip`` in its own process, as on the phone.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from offhook.firmware.devtools.kamailio import KamailioServer
from offhook.firmware.sim import SimPhone, sim_config
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import DEFAULT_USERS
from tests.fixtures.sip_phone import account, phone_config

CALL_S = float(os.environ.get("OFFHOOK_BENCH_CALL_S", "20"))
IDLE_S = float(os.environ.get("OFFHOOK_BENCH_IDLE_S", "20"))
_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


class EngineProcess:
    """``python -m offhook.firmware.sip`` with a line reader on its stdout."""

    def __init__(self, config_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "offhook.firmware.sip", str(config_path), "--tone", "1000"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_line(self, *needles: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if all(n in line for n in needles):
                return line
        raise RuntimeError(f"engine never printed a line with {needles}")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.send("quit")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def child_pids(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def phone_process_pid(sim: SimPhone) -> int:
    """The ``firmware.phone_process`` child of the simulator's supervisor."""
    assert sim.process is not None
    pending = [sim.process.pid]
    while pending:
        pid = pending.pop()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"offhook.firmware.phone_process" in cmdline:
            return pid
        pending += child_pids(pid)
    raise RuntimeError("no phone process under the simulator")


def native_extensions(pid: int) -> list[str]:
    """Python packages with a native library mapped into ``pid`` (what it imported, roughly)."""
    packages = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1]
        if "site-packages/" in path and ".so" in path:
            packages.add(path.split("site-packages/")[1].split("/")[0])
    return sorted(packages)


def measure_idle(pid: int) -> tuple[float, float]:
    start = cpu_seconds(pid)
    time.sleep(IDLE_S)
    return rss_mb(pid), (cpu_seconds(pid) - start) / IDLE_S * 60


def measure_idle_together(*pids: int) -> list[tuple[float, float]]:
    """(RSS MB, CPU s/min) of each process over the same idle interval."""
    starts = [cpu_seconds(pid) for pid in pids]
    time.sleep(IDLE_S)
    return [
        (rss_mb(pid), (cpu_seconds(pid) - start) / IDLE_S * 60)
        for pid, start in zip(pids, starts, strict=True)
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-resources-") as tmp:
        base = Path(tmp)
        kam = KamailioServer(base / "kamailio")
        for user, password in DEFAULT_USERS.items():
            kam.add_user(user, password)
        with kam:
            callee = BaresipPeer(
                base / "callee", user="1002", password=DEFAULT_USERS["1002"],
                registrar=kam.domain, codecs="PCMU",
            )  # fmt: skip
            caller = BaresipPeer(
                base / "caller", user="1003", password=DEFAULT_USERS["1003"],
                registrar=kam.domain, codecs="PCMU",
            )  # fmt: skip
            config_path = base / "phone.toml"
            config = phone_config(kam, [account(kam, "1001")], codecs=["PCMU"])
            config_path.write_text(config.to_toml())
            engine = EngineProcess(config_path)
            sim = SimPhone(
                base / "sim", sim_config("bench", "1004", DEFAULT_USERS["1004"], kam.domain)
            )
            try:
                with callee, caller:
                    engine.wait_line("RegistrationChanged", "registered=True")
                    assert caller.process_id is not None
                    ours_rss, ours_idle = measure_idle(engine.process.pid)
                    peer_rss, peer_idle = measure_idle(caller.process_id)

                    engine.send("call 1002")
                    line = engine.wait_line("CallStateChanged", '"confirmed"')
                    call_id = line.split("call_id=")[1].split()[0]
                    start = cpu_seconds(engine.process.pid)
                    time.sleep(CALL_S)
                    ours_call = (cpu_seconds(engine.process.pid) - start) / CALL_S * 60
                    engine.send(f"hangup {call_id}")
                    engine.wait_line("CallStateChanged", '"disconnected"')
                    # after a call (past its wind-down): no clock and no port left ticking
                    time.sleep(2.0)
                    _, ours_after_call = measure_idle(engine.process.pid)

                    mark = len(caller.events)
                    caller.dial(f"sip:1002@{kam.domain}")
                    caller.wait_event("CALL_ESTABLISHED", start=mark)
                    start = cpu_seconds(caller.process_id)
                    time.sleep(CALL_S)
                    peer_call = (cpu_seconds(caller.process_id) - start) / CALL_S * 60
                    caller.hangup()
                    engine.stop()

                    sim.start()
                    sim.wait_registered(timeout=60)
                    phone_pid = phone_process_pid(sim)
                    time.sleep(2.0)  # start-up work (first screens, provisioning check) settles
                    assert sim.process is not None
                    (phone_rss, phone_idle), (supervisor_rss, supervisor_idle) = (
                        measure_idle_together(phone_pid, sim.process.pid)
                    )
                    extensions = native_extensions(phone_pid)
            finally:
                engine.stop()
                sim.stop()
    print(f"call length measured: {CALL_S:.0f} s per side, PCMU, 1 kHz sine sent by both callers")
    print(f"idle measured over {IDLE_S:.0f} s per process")
    print(f"engine idle RSS: {ours_rss:.1f} MB; peer baresip: {peer_rss:.1f} MB; "
          f"ratio {ours_rss / peer_rss:.2f}x")  # fmt: skip
    print(f"engine idle CPU: {ours_idle:.3f} s/min; peer baresip: {peer_idle:.3f} s/min; "
          f"ratio {_ratio(ours_idle, peer_idle)}")  # fmt: skip
    print(f"engine idle CPU after a call: {ours_after_call:.3f} s/min; peer baresip: "
          f"{peer_idle:.3f} s/min; ratio {_ratio(ours_after_call, peer_idle)}")  # fmt: skip
    print(f"engine CPU per call-minute: {ours_call:.2f} s; peer baresip: {peer_call:.2f} s; "
          f"ratio {_ratio(ours_call, peer_call)}")  # fmt: skip
    print(f"phone process idle RSS: {phone_rss:.1f} MB; peer baresip: {peer_rss:.1f} MB; "
          f"ratio {phone_rss / peer_rss:.2f}x")  # fmt: skip
    print(f"phone process idle CPU: {phone_idle:.3f} s/min; peer baresip: {peer_idle:.3f} s/min;"
          f" ratio {_ratio(phone_idle, peer_idle)}")  # fmt: skip
    whole = phone_idle + supervisor_idle
    print(f"supervisor idle RSS: {supervisor_rss:.1f} MB; idle CPU: {supervisor_idle:.3f} s/min")
    print(f"whole phone (supervisor + phone process) idle CPU: {whole:.3f} s/min (goal <= 0.1); "
          f"peer baresip: {peer_idle:.3f} s/min")  # fmt: skip
    print(f"phone process native extensions at idle: {', '.join(extensions)}")
    return 0


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "n/a (peer used no measurable CPU)"


if __name__ == "__main__":
    raise SystemExit(main())
