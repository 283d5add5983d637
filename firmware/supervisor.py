"""``offhook run``: keeps one phone process alive.

The phone process (pjsua2 inside) may die (kill -9, an abort in the C library) or hang. The
supervisor starts it with the write end of a pipe; the phone writes a byte to it every half second
while its runtime loop and its SIP engine are both alive. The supervisor restarts the phone when it
exits or when the heartbeats stop (SIGKILL first), waiting longer after each quick failure. Under
systemd it sends READY=1 once the first phone is healthy and WATCHDOG=1 only while a phone is.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from offhook.contract.config import ConfigError, load_config
from offhook.contract.logs import kv, setup_logging
from offhook.firmware.control.protocol import ControlError, check_exposure
from offhook.firmware.heartbeat import HUNG_AFTER_ENV, PREVIOUS_EXIT_ENV, seconds_from_env
from offhook.firmware.systemd import Notifier

log = logging.getLogger("offhook.supervisor")

ChildArgv = Callable[[int], list[str]]  # heartbeat fd -> the command line of the child
# The phone's exit statuses for "could not start": a config it refuses (2) or a set-up/start
# failure (firmware.phone_process.EXIT_START_FAILED); the phone printed the reason on stderr.
START_FAILED_CODES = (2, 78)
MALLOC_ARENA_MAX_ENV = "MALLOC_ARENA_MAX"
CHILD_MALLOC_ARENAS = "2"
WATCH_TICK_S = 1.0  # longest wait of the watch loop (see Supervisor._watch_tick_s)


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts, reset once a child has stayed healthy long enough."""

    first_delay_s: float = 0.0  # the first restart is immediate: a phone should be back at once
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    factor: float = 2.0
    stable_after_s: float = 5.0  # healthy this long: the next failure restarts at once
    heartbeat_timeout_s: float = 5.0  # no heartbeat for this long: the phone is hung
    startup_timeout_s: float = 30.0  # the first heartbeat must arrive within this
    start_failure_delay_s: float = 2.0  # a phone that could not start is not retried at once

    def delay(self, quick_failures: int) -> float:
        """Wait before the next start, given how many starts in a row failed quickly (>= 1)."""
        if quick_failures <= 1:
            return self.first_delay_s
        return min(self.max_delay_s, self.base_delay_s * self.factor ** (quick_failures - 2))


STARTUP_TIMEOUT_ENV = "OFFHOOK_STARTUP_TIMEOUT_S"


def policy_from_env(env: Mapping[str, str] | None = None) -> RestartPolicy:
    """The default policy, with limits from the environment when set: $OFFHOOK_STARTUP_TIMEOUT_S
    (a phone on an emulated CPU, the Pi image under QEMU TCG, needs 25-40 s to its first
    heartbeat, and was killed at 30 s and restarted for ever) and $OFFHOOK_HUNG_AFTER_S (under
    TCG on a loaded host one pjsua2 step can take longer than the 5 s a Pi allows, and a phone
    in a call was killed as hung)."""
    source: Mapping[str, str] = os.environ if env is None else env
    policy = RestartPolicy()
    startup = seconds_from_env(source, STARTUP_TIMEOUT_ENV)
    if startup is not None:
        policy = replace(policy, startup_timeout_s=startup)
    hung = seconds_from_env(source, HUNG_AFTER_ENV)
    if hung is not None:
        policy = replace(policy, heartbeat_timeout_s=hung)
    return policy


@dataclass
class ChildRun:
    """What happened to one child: for logs, status and tests."""

    pid: int
    started: float
    healthy: bool = False
    ended: float | None = None
    reason: str = ""  # "exited", "start_failed", "hung", "no_heartbeat_at_start", "stopped"
    returncode: int | None = None


@dataclass
class SupervisorState:
    runs: list[ChildRun] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return max(0, len(self.runs) - 1)


class Supervisor:
    def __init__(
        self,
        child_argv: ChildArgv,
        policy: RestartPolicy | None = None,
        notifier: Notifier | None = None,
        env: dict[str, str] | None = None,
        stop_on_start_failure: bool = False,
    ) -> None:
        self.child_argv = child_argv
        # The simulator stops when its phone cannot start (the reason is on the terminal); on a
        # phone the supervisor keeps trying with backoff (a USB sound card may yet appear).
        self.stop_on_start_failure = stop_on_start_failure
        self.policy = policy or RestartPolicy()
        self.notifier = notifier or Notifier()
        self.env = env
        self.state = SupervisorState()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready_sent = False
        self._tty_attrs = _save_tty()

    @property
    def child_pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def stop(self) -> None:
        """Ask the loop to end (safe from signal handlers and other threads)."""
        self._stopping = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def run(self) -> int:
        """Supervise until stopped: 0, or 1 when the phone could not start and
        ``stop_on_start_failure`` is set."""
        quick_failures = 0
        try:
            while not self._stopping:
                run = self._run_child_once()
                if self._stopping:
                    break
                lived = (run.ended or time.monotonic()) - run.started
                quick_failures = (
                    1
                    if run.healthy and lived >= self.policy.stable_after_s
                    else (quick_failures + 1)
                )
                delay = self.policy.delay(quick_failures)
                if run.reason == "start_failed":
                    if self.stop_on_start_failure:
                        log.error(
                            "phone process could not start; stopping",
                            extra=kv(pid=run.pid, returncode=run.returncode),
                        )
                        return 1
                    delay = max(delay, self.policy.start_failure_delay_s)
                log.warning(
                    "phone process ended; restarting",
                    extra=kv(
                        pid=run.pid,
                        reason=run.reason,
                        returncode=run.returncode,
                        lived_s=round(lived, 2),
                        delay_s=round(delay, 2),
                        restarts=self.state.restarts + 1,
                    ),
                )
                self.notifier.status(f"phone {run.reason}; restarting in {delay:.1f}s")
                self._sleep(delay)
        finally:
            self.notifier.stopping()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return 0

    # --- one child's life -----------------------------------------------------------------------

    def _run_child_once(self) -> ChildRun:
        beat_r, beat_w = os.pipe()
        try:
            argv = self.child_argv(beat_w)
            proc = subprocess.Popen(argv, pass_fds=(beat_w,), env=self._child_env())
        finally:
            os.close(beat_w)
        self._proc = proc
        run = ChildRun(pid=proc.pid, started=time.monotonic())
        self.state.runs.append(run)
        log.info("phone process started", extra=kv(pid=proc.pid, run=len(self.state.runs)))
        try:
            self._watch(proc, run, beat_r)
        finally:
            os.close(beat_r)
            self._restore_tty()
        run.ended = time.monotonic()
        run.returncode = proc.returncode
        return run

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        # glibc gives each thread that allocates its own malloc arena, up to 8 per core; the
        # phone's dozen threads hardly allocate, so two arenas are enough (an explicit setting
        # from the environment wins).
        env.setdefault(MALLOC_ARENA_MAX_ENV, CHILD_MALLOC_ARENAS)
        previous = self.state.runs[-1] if self.state.runs else None
        if previous is not None:
            env[PREVIOUS_EXIT_ENV] = describe_exit(previous)
        return env

    @property
    def _watch_tick_s(self) -> float:
        """How long the watch loop waits for a heartbeat or a wake-up before checking the child.

        A dying child closes the heartbeat pipe, which ends the wait at once; the tick only
        bounds how late a hang (no heartbeat) or a slow start is noticed, so it is a fraction of
        the heartbeat timeout rather than a fast poll (5 wake-ups a second cost an idle phone
        0.01-0.02 CPU s/min)."""
        return min(WATCH_TICK_S, self.policy.heartbeat_timeout_s / 4)

    def _watch(self, proc: subprocess.Popen[bytes], run: ChildRun, beat_r: int) -> None:
        last_beat: float | None = None
        last_watchdog = 0.0
        pipe_open = True
        while True:
            if self._stopping:
                run.reason = "stopped"
                self._terminate(proc)
                return
            watched = [self._wake_r] + ([beat_r] if pipe_open else [])
            readable, _, _ = select.select(watched, [], [], self._watch_tick_s)
            now = time.monotonic()
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 64)
            if beat_r in readable:
                if os.read(beat_r, 4096):
                    last_beat = now
                    if not run.healthy:
                        run.healthy = True
                        self._on_first_heartbeat(run, now)
                else:
                    pipe_open = False  # child closed its end: it is exiting, reap it at once
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=1.0)
            if proc.poll() is not None:
                failed = not run.healthy and proc.returncode in START_FAILED_CODES
                run.reason = "start_failed" if failed else "exited"
                return
            if last_beat is None and now - run.started > self.policy.startup_timeout_s:
                run.reason = "no_heartbeat_at_start"
                self._kill(proc, run.reason)
                return
            if last_beat is not None and now - last_beat > self.policy.heartbeat_timeout_s:
                run.reason = "hung"
                self._kill(proc, run.reason)
                return
            interval = self.notifier.watchdog_interval_s
            if interval and last_beat is not None and now - last_watchdog >= interval:
                self.notifier.watchdog()
                last_watchdog = now

    def _on_first_heartbeat(self, run: ChildRun, now: float) -> None:
        log.info(
            "phone process healthy",
            extra=kv(pid=run.pid, startup_s=round(now - run.started, 3)),
        )
        if not self._ready_sent:
            self.notifier.ready(status="phone running")
            self._ready_sent = True
        else:
            self.notifier.status("phone running")

    def _kill(self, proc: subprocess.Popen[bytes], reason: str) -> None:
        log.error("phone process unresponsive; killing", extra=kv(pid=proc.pid, reason=reason))
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()

    def _terminate(self, proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("phone ignored SIGTERM; killing", extra=kv(pid=proc.pid))
                proc.kill()
                proc.wait()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([self._wake_r], [], [], left)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 64)

    def _restore_tty(self) -> None:
        """A phone killed while drawing in the terminal leaves it in raw mode: put it back."""
        if self._tty_attrs is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, self._tty_attrs)


def describe_exit(run: ChildRun) -> str:
    """How a phone process ended, in words for a log line or a report to the server."""
    code = run.returncode
    how = {
        "hung": "was killed after its heartbeats stopped (a hung loop)",
        "no_heartbeat_at_start": "was killed: no heartbeat within the start-up limit",
        "start_failed": f"could not start (exit {code})",
        "stopped": "was stopped",
    }.get(run.reason)
    if how is not None:
        return how
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _save_tty() -> list | None:
    try:
        if sys.stdin is not None and sys.stdin.isatty():
            return termios.tcgetattr(sys.stdin.fileno())
    except (termios.error, OSError, ValueError):
        pass
    return None


def phone_argv(
    config: Path, board: str, headless: bool, extra: list[str] | None = None
) -> ChildArgv:
    """The child command line for ``offhook phone`` with the heartbeat fd filled in."""

    def argv(fd: int) -> list[str]:
        cmd = [sys.executable, "-m", "offhook.firmware.phone_process", "--config", str(config)]
        cmd += ["--board", board, "--heartbeat-fd", str(fd)]
        if headless:
            cmd.append("--headless")
        return cmd + list(extra or [])

    return argv


def install_signal_handlers(supervisor: Supervisor) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra=kv(signal=signal.Signals(signum).name))
        supervisor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


def supervise(config: Path, board: str, headless: bool, log_level: str) -> int:

    try:
        cfg = load_config(config)
        check_exposure(cfg.control.listen, cfg.control.token)
    except (ConfigError, ControlError) as exc:
        print(f"offhook: {exc}", file=sys.stderr)
        return 2
    try:
        policy = policy_from_env()
    except ValueError as exc:
        print(f"offhook: {exc}", file=sys.stderr)
        return 2
    setup_logging(log_level or cfg.logging.level)
    supervisor = Supervisor(phone_argv(config, board, headless), policy=policy)
    install_signal_handlers(supervisor)
    log.info("supervisor started", extra=kv(config=config, board=board, headless=headless))
    return supervisor.run()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="offhook run", description="run the phone under its supervisor (restarts it)"
    )
    parser.add_argument("--config", required=True, type=Path, help="phone config (TOML)")
    parser.add_argument("--board", choices=("rpi", "emulated"), default="rpi")
    parser.add_argument("--headless", action="store_true", help="no display output")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="")
    args = parser.parse_args(argv)
    return supervise(args.config, args.board, args.headless, args.log_level)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
