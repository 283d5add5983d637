"""Recovery after kill -9, and key press -> screen through the control API.

1. ``offhook sim --headless`` registered to Kamailio; kill -9 the phone process (the one holding
   pjsua2); time until the control API reports it registered again (goal <= 3 s).
   Peer, same run and same Kamailio: baresip restarted by a plain shell loop after kill -9, timed
   until its log shows the new registration's 200 OK.
2. Key press -> screen: POST /api/v1/keys returns once the runtime handled the key and the Phone
   rendered the new screen. Peer: GET /api/v1/screen on the same phone (same HTTP stack, no
   event loop round trip).
Medians over N runs each.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from offhook.firmware.sim import SimPhone, free_port, is_registered, sim_config
from tests.fixtures.baresip import BaresipPeer
from tests.fixtures.kamailio import KamailioServer

RUNS = 5
KEY_RUNS = 40
STABLE_WAIT_S = 5.5  # the supervisor restarts at once only after a stable period (backoff)
REGISTERED_LINE = re.compile(rb"200 OK", re.MULTILINE)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def time_offhook_recovery(phone: SimPhone) -> float:
    pid = phone.wait_registered(30)["device"]["pid"]
    time.sleep(STABLE_WAIT_S)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    phone.wait_for(
        lambda s: s["device"]["pid"] != pid and is_registered(s),
        timeout=30,
        what="registered again",
    )
    return time.monotonic() - started


class BaresipLoop:
    """baresip under ``while true; do baresip; done``: what a shell script would give you."""

    def __init__(self, directory: Path, user: str, password: str, registrar: str) -> None:
        self.peer = BaresipPeer(directory, user=user, password=password, registrar=registrar)
        self.directory = directory
        self.log_path = directory / "loop.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer = self.peer
        self.directory.mkdir(parents=True, exist_ok=True)
        peer.sip_port = free_port()
        peer.ctrl_port = free_port()
        peer._write_config()  # the fixture's config, used as is
        # fd 3 is a pipe nobody writes: baresip quits on EOF, so stdin must stay open
        script = 'while :; do baresip -f "$1" <&3; done 3< <(exec sleep 100000)'
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", script, "loop", str(self.directory)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def registrations(self) -> int:
        return len(REGISTERED_LINE.findall(self.log_path.read_bytes()))

    def baresip_pid(self) -> int | None:
        assert self.process is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid), "-x", "baresip"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return int(out[0]) if out else None

    def wait(self, cond, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("baresip loop: condition not reached")
            time.sleep(0.01)

    def time_recovery(self) -> float:
        self.wait(lambda: self.baresip_pid() is not None and self.registrations() > 0)
        before = self.registrations()
        pid = self.baresip_pid()
        assert pid is not None
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.wait(lambda: self.registrations() > before)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def time_key_presses(phone: SimPhone) -> tuple[list[float], list[float]]:
    client = phone.client
    client.hook(True)
    keys, reads = [], []
    try:
        for i in range(KEY_RUNS):
            if i % 3 == 0:  # stay below a complete number: the digit map would place a call
                client.hook(False)
                client.hook(True)
            started = time.monotonic()
            reply = client.keys("9")
            keys.append(time.monotonic() - started)
            assert any("9" in line for line in reply["screen"]), reply
            started = time.monotonic()
            client.screen()
            reads.append(time.monotonic() - started)
    finally:
        client.hook(False)
    return keys, reads


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        root = Path(tmp)
        with KamailioServer(root / "kamailio") as kam:
            kam.add_user("1001", "pw1001")
            kam.add_user("1003", "pw1003")
            phone = SimPhone(root / "phone", sim_config("bench", "1001", "pw1001", kam.domain))
            loop = BaresipLoop(root / "baresip", "1003", "pw1003", kam.domain)
            phone.start()
            loop.start()
            try:
                ours = [time_offhook_recovery(phone) for _ in range(RUNS)]
                theirs = [loop.time_recovery() for _ in range(RUNS)]
                phone.wait_registered(30)
                keys, reads = time_key_presses(phone)
            finally:
                phone.stop()
                loop.stop()
    ours_ms, theirs_ms = median_ms(ours), median_ms(theirs)
    print(f"kill -9 -> registered again, offhook sim (supervisor): median {ours_ms:.0f} ms")
    print(f"kill -9 -> registered again, baresip (shell loop):     median {theirs_ms:.0f} ms")
    print(f"ratio offhook/baresip: {ours_ms / theirs_ms:.2f}x   (goal: offhook <= 3000 ms)")
    print(f"  runs offhook: {[round(v * 1000) for v in ours]} ms")
    print(f"  runs baresip: {[round(v * 1000) for v in theirs]} ms")
    keys_ms, reads_ms = median_ms(keys), median_ms(reads)
    print(f"key press -> new screen via control API + runtime: median {keys_ms:.1f} ms")
    print(f"GET /screen on the same phone (no event loop):     median {reads_ms:.1f} ms")
    print(f"ratio key press/GET screen: {keys_ms / reads_ms:.2f}x")
    return 0 if ours_ms <= 3000 else 1


if __name__ == "__main__":
    raise SystemExit(main())
