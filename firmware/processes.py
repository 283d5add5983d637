"""Stopping a child process: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process(process: subprocess.Popen, grace_s: float = 10.0, group: bool = False) -> None:
    """Ask ``process`` to stop and wait up to ``grace_s``, then kill it. ``group``: signal its
    whole process group (started with ``start_new_session``), so its children go too."""
    if process.poll() is not None:
        return
    _signal(process, signal.SIGTERM, group)
    wait_or_kill(process, grace_s, group)


def wait_or_kill(process: subprocess.Popen, grace_s: float, group: bool = False) -> None:
    """Wait up to ``grace_s`` for a process already asked to stop, then kill it."""
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL, group)
        process.wait(timeout=10)


def _signal(process: subprocess.Popen, signum: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
