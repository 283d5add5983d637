"""Supervisor restart policy with real child processes and a real sd_notify socket."""

from __future__ import annotations

import itertools
import os
import socket
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from offhook.firmware.supervisor import RestartPolicy, Supervisor
from offhook.firmware.systemd import Notifier
from tests.fixtures.waiting import wait_until

# A stand-in for the phone process: speaks the heartbeat protocol and misbehaves on request.
CHILD = r"""
import os, sys, time
fd, mode, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(marker, "a") as fh:
    fh.write(f"{os.getpid()}\n")
for _ in range(6):
    os.write(fd, b".")
    time.sleep(0.05)
if mode == "exit":
    sys.exit(3)
if mode == "hang":
    time.sleep(120)  # alive but silent: a hung engine
while True:  # "healthy"
    os.write(fd, b".")
    time.sleep(0.05)
"""

FAST = RestartPolicy(
    first_delay_s=0.0,
    base_delay_s=0.05,
    max_delay_s=0.2,
    stable_after_s=60.0,
    heartbeat_timeout_s=0.6,
    startup_timeout_s=5.0,
)


wait_for = partial(wait_until, timeout=20.0)


def start(tmp_path: Path, mode: str, notifier: Notifier | None = None):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "pids"
    marker.touch()

    def argv(fd: int) -> list[str]:
        return [sys.executable, str(script), str(fd), mode, str(marker)]

    sup = Supervisor(argv, FAST, notifier or Notifier(environ={}))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    thread.start()
    return sup, thread, result, marker


def stop(sup: Supervisor, thread: threading.Thread, result: list[int]) -> None:
    sup.stop()
    thread.join(15)
    assert not thread.is_alive()
    assert result == [0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_backoff_grows_and_is_capped() -> None:
    policy = RestartPolicy(first_delay_s=0.0, base_delay_s=0.5, factor=2.0, max_delay_s=4.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_child_that_exits_is_restarted(tmp_path: Path) -> None:
    sup, thread, result, marker = start(tmp_path, "exit")
    wait_for(lambda: len(marker.read_text().split()) >= 3)
    stop(sup, thread, result)
    ended = [r for r in sup.state.runs if r.ended is not None]
    assert ended[0].reason == "exited"
    assert ended[0].returncode == 3
    assert ended[0].healthy
    pids = marker.read_text().split()
    assert len(set(pids)) >= 3


def test_hung_child_is_killed_and_restarted(tmp_path: Path) -> None:
    sup, thread, result, _ = start(tmp_path, "hang")
    wait_for(lambda: len(sup.state.runs) >= 2)
    first = sup.state.runs[0]
    wait_for(lambda: first.ended is not None)
    stop(sup, thread, result)
    assert first.reason == "hung"
    assert first.returncode == -9
    assert not alive(first.pid)


def test_kill_9_is_survived_and_stop_terminates_child(tmp_path: Path) -> None:
    sup, thread, result, _ = start(tmp_path, "healthy")
    wait_for(lambda: sup.state.runs and sup.state.runs[0].healthy)
    victim = sup.state.runs[0].pid
    os.kill(victim, 9)
    wait_for(lambda: len(sup.state.runs) >= 2 and sup.state.runs[1].healthy)
    last = sup.state.runs[-1].pid
    stop(sup, thread, result)
    assert sup.state.runs[0].returncode == -9
    assert sup.state.runs[-1].reason == "stopped"
    assert not alive(last)


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    yield path, sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            return messages


def test_systemd_ready_and_watchdog_only_while_healthy(tmp_path: Path, notify_socket) -> None:
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
    sup, thread, result, _ = start(tmp_path, "hang", Notifier(environ=env))
    wait_for(lambda: len(sup.state.runs) >= 2)
    # the hung child is gone; read everything sent up to now, then stop
    messages = drain(sock)
    stop(sup, thread, result)
    assert any("READY=1" in m for m in messages)
    assert any(m == "WATCHDOG=1" for m in messages)
    assert any("restarting" in m for m in messages)


def test_no_ready_and_no_watchdog_without_heartbeat(tmp_path: Path, notify_socket) -> None:
    path, sock = notify_socket
    script = tmp_path / "silent.py"
    script.write_text("import time\ntime.sleep(120)\n")
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"}
    policy = RestartPolicy(heartbeat_timeout_s=0.3, startup_timeout_s=0.8, base_delay_s=0.05)
    sup = Supervisor(lambda fd: [sys.executable, str(script)], policy, Notifier(environ=env))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    thread.start()
    wait_for(lambda: len(sup.state.runs) >= 2)
    stop(sup, thread, result)
    messages = drain(sock)
    assert sup.state.runs[0].reason == "no_heartbeat_at_start"
    assert not any("READY=1" in m or "WATCHDOG=1" in m for m in messages)
    assert "STOPPING=1" in messages


COMMANDS = ["offhook.firmware.supervisor", "offhook.firmware.sim", "offhook.firmware.phone_process"]


@pytest.mark.parametrize("module", COMMANDS)
def test_commands_refuse_a_bad_config_with_its_key(module: str, tmp_path: Path, capsys) -> None:
    import importlib

    main = importlib.import_module(module).main
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[control]\nlisten = "nowhere"\n')
    assert main(["--config", str(bad)]) == 2
    assert "control.listen" in capsys.readouterr().err


@pytest.mark.parametrize("module", COMMANDS[:2])
def test_open_control_api_on_the_network_is_refused(module: str, tmp_path: Path, capsys) -> None:
    import importlib

    config = tmp_path / "open.toml"
    config.write_text('[control]\nlisten = "0.0.0.0:8080"\ntoken = ""\n')
    assert importlib.import_module(module).main(["--config", str(config)]) == 2
    assert "control.token is empty" in capsys.readouterr().err


def start_failing(tmp_path: Path, stop_on_start_failure: bool, policy: RestartPolicy = FAST):
    """A child that exits as a phone that cannot start does: no heartbeat, status 78."""
    from offhook.firmware.phone_process import EXIT_START_FAILED

    marker = tmp_path / "starts"
    marker.touch()
    code = (
        f"import sys, time; open({str(marker)!r}, 'a').write(f'{{time.monotonic()}}\\n');"
        f" sys.exit({EXIT_START_FAILED})"
    )
    sup = Supervisor(
        lambda _fd: [sys.executable, "-c", code],
        policy,
        Notifier(environ={}),
        stop_on_start_failure=stop_on_start_failure,
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    thread.start()
    return sup, thread, result, marker


def test_simulator_supervisor_stops_when_the_phone_cannot_start(tmp_path: Path) -> None:
    sup, thread, result, marker = start_failing(tmp_path, stop_on_start_failure=True)
    thread.join(20)
    assert not thread.is_alive() and result == [1]
    assert len(marker.read_text().split()) == 1  # started once, not again
    assert sup.state.runs[0].reason == "start_failed"


def test_phone_that_cannot_start_is_retried_with_a_pause(tmp_path: Path) -> None:
    policy = RestartPolicy(
        first_delay_s=0.0, base_delay_s=0.05, max_delay_s=0.2, start_failure_delay_s=0.5
    )
    sup, thread, result, marker = start_failing(tmp_path, False, policy)
    wait_for(lambda: len(marker.read_text().split()) >= 3)
    stop(sup, thread, result)
    starts = [float(t) for t in marker.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.5 for gap in gaps), gaps  # never the immediate first restart
    assert {r.reason for r in sup.state.runs[:2]} == {"start_failed"}  # the last one: stopped


def test_a_restarted_phone_learns_how_its_predecessor_ended(tmp_path: Path) -> None:
    from offhook.firmware.supervisor import PREVIOUS_EXIT_ENV

    seen = tmp_path / "seen"
    seen.touch()
    code = (
        "import os, signal\n"
        f"with open({str(seen)!r}, 'a') as fh:\n"
        f"    fh.write(os.environ.get({PREVIOUS_EXIT_ENV!r}, '-') + '\\n')\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n"  # as a crash in the C library would
    )
    sup = Supervisor(lambda _fd: [sys.executable, "-c", code], FAST, Notifier(environ={}))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    thread.start()
    wait_for(lambda: len(seen.read_text().splitlines()) >= 2)
    stop(sup, thread, result)
    first, second = seen.read_text().splitlines()[:2]
    assert first == "-"  # the first phone has no predecessor
    assert second == "was killed by SIGSEGV"


def test_the_phone_process_runs_with_few_malloc_arenas(tmp_path: Path) -> None:
    """glibc's arena limit is set for the child (memory per thread on a small board); a value
    the supervisor's own environment names is passed on unchanged."""
    from offhook.firmware.supervisor import CHILD_MALLOC_ARENAS

    seen = tmp_path / "seen"
    code = (
        "import os, time\n"
        f"with open({str(seen)!r}, 'a') as fh:\n"
        "    fh.write(os.environ.get('MALLOC_ARENA_MAX', '-') + '\\n')\n"
        "time.sleep(30)\n"
    )
    for env, expected in (({}, CHILD_MALLOC_ARENAS), ({"MALLOC_ARENA_MAX": "1"}, "1")):
        seen.write_text("")
        sup = Supervisor(
            lambda _fd: [sys.executable, "-c", code], FAST, Notifier(environ={}), env=env
        )
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)  # noqa: B023
        thread.start()
        wait_for(lambda: seen.read_text().strip())
        stop(sup, thread, result)
        assert seen.read_text().split() == [expected]


def test_startup_limit_comes_from_the_environment_when_set() -> None:
    from offhook.firmware.supervisor import STARTUP_TIMEOUT_ENV, policy_from_env

    assert policy_from_env({}) == RestartPolicy()
    assert policy_from_env({STARTUP_TIMEOUT_ENV: "180"}).startup_timeout_s == 180.0
    assert policy_from_env({STARTUP_TIMEOUT_ENV: " "}).startup_timeout_s == 30.0
    for bad in ("soon", "0", "601", "nan"):
        with pytest.raises(ValueError, match=rf"{STARTUP_TIMEOUT_ENV}='{bad}': need seconds"):
            policy_from_env({STARTUP_TIMEOUT_ENV: bad})


def test_hang_limit_comes_from_the_environment_for_both_sides() -> None:
    """$OFFHOOK_HUNG_AFTER_S moves the supervisor's limit and, in step, the phone's own stall
    limit (which withholds the heartbeat), so the phone never looks hung to one side only."""
    from offhook.firmware.heartbeat import HUNG_AFTER_ENV, STALE_AFTER_S, stale_after_from_env
    from offhook.firmware.supervisor import policy_from_env

    assert policy_from_env({}).heartbeat_timeout_s == 5.0
    assert stale_after_from_env({}) == STALE_AFTER_S
    policy = policy_from_env({HUNG_AFTER_ENV: "30", "OFFHOOK_STARTUP_TIMEOUT_S": "180"})
    assert (policy.heartbeat_timeout_s, policy.startup_timeout_s) == (30.0, 180.0)
    assert stale_after_from_env({HUNG_AFTER_ENV: "30"}) == 18.0
    for bad in ("later", "0.5", "601", "nan"):
        with pytest.raises(ValueError, match=rf"{HUNG_AFTER_ENV}='{bad}': need seconds"):
            policy_from_env({HUNG_AFTER_ENV: bad})
        with pytest.raises(ValueError, match=rf"{HUNG_AFTER_ENV}='{bad}': need seconds"):
            stale_after_from_env({HUNG_AFTER_ENV: bad})
