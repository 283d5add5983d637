"""stop_process / wait_or_kill on real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from offhook.firmware.processes import stop_process, wait_or_kill

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)


def _started(code: str, **kwargs: object) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **kwargs
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "up"
    return process


def test_a_process_that_honours_sigterm_ends_with_it() -> None:
    process = _started("import time; print('up', flush=True); time.sleep(60)")
    stop_process(process, grace_s=10)
    assert process.returncode == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    process = _started(IGNORES_TERM)
    stop_process(process, grace_s=0.2)
    assert process.returncode == -signal.SIGKILL


def test_group_stop_takes_the_children_too() -> None:
    code = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('up', flush=True); print(child.pid, flush=True); time.sleep(60)"
    )
    process = _started(code, start_new_session=True)
    assert process.stdout is not None
    child = int(process.stdout.readline())
    stop_process(process, grace_s=10, group=True)
    assert process.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while _alive(child):  # the child is reaped by init once its parent is gone
        assert time.monotonic() < deadline, "child of the group still running"
        time.sleep(0.02)


def test_wait_or_kill_does_not_signal_first_and_finished_processes_are_left_alone() -> None:
    process = _started(IGNORES_TERM)
    wait_or_kill(process, grace_s=0.2)  # never asked to stop: waited, then killed
    assert process.returncode == -signal.SIGKILL
    stop_process(process)  # already gone: nothing to do, no error
    wait_or_kill(process, grace_s=0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie counts as gone
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
