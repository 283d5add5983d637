"""The bridge under CPU starvation, with and without real-time scheduling of its threads.

Clean-network PCMU calls between two offhook engines (``tests.fixtures.speech_calls``, the
phone's ALSA bridge on file PCMs), alternating between the bridge's device threads at normal
priority and at SCHED_FIFO (``audio.realtime_priority``), in the same run on the same rig, with
``OFFHOOK_BENCH_HOGS`` (default 2) busy processes per CPU competing at normal priority. Printed
per variant: PESQ narrowband mean and median, and the callee's playback-ring underruns,
overruns and reported MOS per call. ``OFFHOOK_BENCH_RUNS`` calls per variant (default 4),
``OFFHOOK_BENCH_PRIORITY`` the real-time priority (default 50), ``OFFHOOK_BENCH_PORTS`` the
relay's ports. Real-time scheduling needs CAP_SYS_NICE (root on this host); without it the
variant says so (``realtime_threads`` 0).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
from pathlib import Path

from offhook.firmware.devtools.impairment import Impairment
from tests.fixtures.speech import pesq_scores
from tests.fixtures.speech_calls import SpeechRig


def _hog() -> None:
    while True:
        pass


def _port_range() -> tuple[int, int] | None:
    text = os.environ.get("OFFHOOK_BENCH_PORTS", "")
    first, _, last = text.partition("-")
    return (int(first), int(last)) if text else None


def main() -> int:
    runs = int(os.environ.get("OFFHOOK_BENCH_RUNS", "4"))
    priority = int(os.environ.get("OFFHOOK_BENCH_PRIORITY", "50"))
    hogs_per_cpu = int(os.environ.get("OFFHOOK_BENCH_HOGS", "2"))
    variants = {"normal": {}, f"SCHED_FIFO {priority}": {"realtime_priority": priority}}
    scores: dict[str, list[float]] = {name: [] for name in variants}
    rows: list[str] = []
    hogs = [
        multiprocessing.Process(target=_hog, daemon=True)
        for _ in range(hogs_per_cpu * (os.cpu_count() or 1))
    ]
    with (
        tempfile.TemporaryDirectory(prefix="bench-priority-") as tmp,
        SpeechRig(Path(tmp), port_range=_port_range()) as rig,
    ):
        for hog in hogs:
            hog.start()
        try:
            for run in range(runs):
                for name, audio in variants.items():
                    try:
                        outcome = rig.call("offhook", "PCMU", Impairment(), 1, audio=audio)
                        nb = pesq_scores(rig.reference, outcome.recording, outcome.rate).narrowband
                    except Exception as exc:  # one failed call must not hide the others
                        rows.append(f"  {run} {name:<14} FAILED: {exc!r}")
                        continue
                    scores[name].append(nb)
                    callee = outcome.bridge.get("callee", {})
                    rows.append(
                        f"  {run} {name:<14} PESQ {nb:4.2f}  underruns "
                        f"{callee.get('playback_underruns', '?')}  overruns "
                        f"{callee.get('playback_overruns', '?')}  realtime threads "
                        f"{callee.get('realtime_threads', '?')}  reported MOS "
                        f"{outcome.reported_mos}"
                    )
        finally:
            for hog in hogs:
                hog.kill()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"clean PCMU, {len(hogs)} busy processes on {os.cpu_count()} CPUs; load {load}")
    print("\n".join(rows))
    for name, values in scores.items():
        if values:
            print(f"{name:<14} PESQ nb mean {statistics.fmean(values):4.2f} median "
                  f"{statistics.median(values):4.2f} over {len(values)} calls")  # fmt: skip
    normal, fifo = scores.values()
    if normal and fifo:
        ratio = statistics.fmean(fifo) / statistics.fmean(normal)
        print(f"SCHED_FIFO / normal mean PESQ: {ratio:.2f}x")
    return 0 if all(scores.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
