"""Resources of a registered phone engine process vs a registered baresip, same run.

- idle RSS (VmRSS) after registration and a short settle;
- idle CPU seconds per minute;
- CPU seconds per call-minute: a real call through Kamailio to an auto-answering baresip, both
  callers sending a 1 kHz sine (ours through the Python AudioMediaPort), PCMU, scaled to 60 s.
The engine runs as ``python -m firmware.sip`` in its own process, as on the phone.
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

from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import DEFAULT_USERS, KamailioServer
from tests.fixtures.sip_phone import account, phone_config

CALL_S = float(os.environ.get("OFFHOOK_BENCH_CALL_S", "20"))
IDLE_S = 3.0
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
    """``python -m firmware.sip`` with a line reader on its stdout."""

    def __init__(self, config_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "firmware.sip", str(config_path), "--tone", "1000"],
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


def measure_idle(pid: int) -> tuple[float, float]:
    start = cpu_seconds(pid)
    time.sleep(IDLE_S)
    return rss_mb(pid), (cpu_seconds(pid) - start) / IDLE_S * 60


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

                    mark = len(caller.events)
                    caller.dial(f"sip:1002@{kam.domain}")
                    caller.wait_event("CALL_ESTABLISHED", start=mark)
                    start = cpu_seconds(caller.process_id)
                    time.sleep(CALL_S)
                    peer_call = (cpu_seconds(caller.process_id) - start) / CALL_S * 60
                    caller.hangup()
            finally:
                engine.stop()
    print(f"call length measured: {CALL_S:.0f} s per side, PCMU, 1 kHz sine sent by both callers")
    print(f"engine idle RSS: {ours_rss:.1f} MB; peer baresip: {peer_rss:.1f} MB; "
          f"ratio {ours_rss / peer_rss:.2f}x")  # fmt: skip
    print(f"engine idle CPU: {ours_idle:.3f} s/min; peer baresip: {peer_idle:.3f} s/min; "
          f"ratio {_ratio(ours_idle, peer_idle)}")  # fmt: skip
    print(f"engine CPU per call-minute: {ours_call:.2f} s; peer baresip: {peer_call:.2f} s; "
          f"ratio {_ratio(ours_call, peer_call)}")  # fmt: skip
    return 0


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "n/a (peer used no measurable CPU)"


if __name__ == "__main__":
    raise SystemExit(main())
