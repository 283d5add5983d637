"""What a listener hears on an imperfect network: PESQ of speech through the phone vs baresip.

Speech (espeak-ng, three Harvard sentences, 16 kHz) goes from one phone's capture device to the
other's playback device through Kamailio and the seeded impairing media relay
(``offhook.firmware.devtools.media_relay``), both directions impaired. Per condition and codec,
the same run places one call between two offhook engines (each with the phone's ALSA bridge on
file PCMs), one between the same engines without the bridge (pjsua2 bare, files at pjsua's
clock) and one between two baresips; the callee's playback is aligned on the reference and
scored with ITU-T P.862 (narrowband, 8 kHz) and P.862.2 (wideband, 16 kHz). The offhook callee's
own E-model MOS (what it reports to the fleet) is printed beside its PESQ.

``OFFHOOK_BENCH_CONDITIONS=clean,loss-3`` picks conditions, ``OFFHOOK_BENCH_CODECS=PCMU`` codecs,
``OFFHOOK_BENCH_PAIRS=offhook`` the pairs (offhook, pjsua2, baresip),
``OFFHOOK_BENCH_SEED`` the relay's seed (default 12), ``OFFHOOK_BENCH_PORTS=first-last`` the
relay's ports.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from offhook.firmware.devtools.impairment import Impairment
from tests.fixtures.speech import PesqScores, pesq_scores
from tests.fixtures.speech_calls import CODECS, PAIRS, CallOutcome, SpeechRig

CONDITIONS: dict[str, Impairment] = {
    "clean": Impairment(),
    "loss-1": Impairment(loss_pct=1),
    "loss-3": Impairment(loss_pct=3),
    "loss-5": Impairment(loss_pct=5),
    "loss-10": Impairment(loss_pct=10),
    "bursty-3": Impairment(burst_loss_pct=3, burst_length=3),
    "jitter-20": Impairment(jitter_ms=20),
    "jitter-40": Impairment(jitter_ms=40),
    "jitter-80": Impairment(jitter_ms=80),
    "combined": Impairment(
        burst_loss_pct=3, burst_length=3, jitter_ms=40, reorder_pct=1, duplicate_pct=1
    ),
}


@dataclass(frozen=True)
class Result:
    scores: PesqScores
    outcome: CallOutcome


def _selected(variable: str, known: tuple[str, ...] | list[str]) -> list[str]:
    wanted = [w for w in os.environ.get(variable, "").split(",") if w]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"{variable}: unknown {unknown}; known: {', '.join(known)}")
    return wanted or list(known)


def _port_range() -> tuple[int, int] | None:
    text = os.environ.get("OFFHOOK_BENCH_PORTS", "")
    if not text:
        return None
    first, _, last = text.partition("-")
    return int(first), int(last)


def _cell(result: Result | None) -> str:
    if result is None:
        return "   failed   "
    return f"{result.scores.narrowband:4.2f} / {result.scores.wideband:4.2f}"


def main() -> int:
    conditions = _selected("OFFHOOK_BENCH_CONDITIONS", list(CONDITIONS))
    codecs = _selected("OFFHOOK_BENCH_CODECS", CODECS)
    pairs = _selected("OFFHOOK_BENCH_PAIRS", PAIRS)
    seed = os.environ.get("OFFHOOK_BENCH_SEED", "12")
    results: dict[tuple[str, str, str], Result | None] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp,
        SpeechRig(Path(tmp), port_range=_port_range()) as rig,
    ):
        for condition in conditions:
            for codec in codecs:
                for pair in pairs:
                    try:
                        outcome = rig.call(pair, codec, CONDITIONS[condition], seed)
                        scores = pesq_scores(rig.reference, outcome.recording, outcome.rate)
                        results[(condition, codec, pair)] = Result(scores, outcome)
                    except Exception as exc:  # one failed call must not hide the table
                        print(f"{condition} {codec} {pair}: FAILED: {exc!r}", flush=True)
                        results[(condition, codec, pair)] = None
    _print_table(conditions, codecs, results, seed)
    _print_reported(conditions, codecs, results)
    return 1 if any(r is None for r in results.values()) else 0


def _print_table(
    conditions: list[str],
    codecs: list[str],
    results: dict[tuple[str, str, str], Result | None],
    seed: str,
) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"PESQ MOS-LQO, narrowband / wideband (P.862 / P.862.2); relay seed {seed!r}; "
          f"load average at the end {load} on {os.cpu_count()} CPUs")  # fmt: skip
    print("offhook: the phones' engines with the ALSA bridge, recorded at the callee's playback "
          "device;\npjsua2: the same engines without the bridge, recorded as decoded; baresip: "
          "recorded as decoded (sndfile)")  # fmt: skip
    print("condition  codec  offhook nb/wb  pjsua2 nb/wb   baresip nb/wb  offhook/baresip nb  "
          "loss seen  E-model")  # fmt: skip
    gaps = []
    for condition in conditions:
        for codec in codecs:
            ours, bare, peer = (results.get((condition, codec, p)) for p in PAIRS)
            ratio = (
                f"{ours.scores.narrowband / peer.scores.narrowband:5.2f}x"
                if ours and peer
                else "   n/a"
            )
            loss = "    n/a"
            reported = " n/a"
            if ours and ours.outcome.relay:
                decided = ours.outcome.relay.to_answerer.decisions
                loss = f"{100 * decided.loss_fraction:5.1f} %"
            if ours and ours.outcome.reported_mos is not None:
                reported = f"{ours.outcome.reported_mos:4.2f}"
                gaps.append(abs(ours.outcome.reported_mos - ours.scores.narrowband))
            print(f"{condition:<10} {codec:<5}  {_cell(ours)}    {_cell(bare)}    {_cell(peer)}  "
                  f"{ratio}              {loss}    {reported}")  # fmt: skip
    for codec in codecs:
        for pair in ("offhook", "pjsua2"):
            both = [
                (mine, theirs)
                for c in conditions
                if (mine := results.get((c, codec, pair)))
                and (theirs := results.get((c, codec, "baresip")))
            ]
            if not both:
                continue
            mean_ratio = statistics.fmean(m.scores.narrowband / t.scores.narrowband
                                          for m, t in both)  # fmt: skip
            at_or_above = sum(m.scores.narrowband >= t.scores.narrowband for m, t in both)
            print(f"[{codec}] {pair}/baresip narrowband PESQ: mean ratio {mean_ratio:.2f}x; "
                  f"at or above baresip in {at_or_above}/{len(both)} conditions")  # fmt: skip
    print("offhook callee's bridge per call: playback underruns / overruns / drift corrections")
    for (condition, codec, pair), result in results.items():
        if pair == "offhook" and result and (callee := result.outcome.bridge.get("callee")):
            counts = [callee.get(k, "?") for k in
                      ("playback_underruns", "playback_overruns", "drift_corrections")]  # fmt: skip
            print(f"  {condition:<10} {codec:<5} {' / '.join(map(str, counts))}")
    if gaps:
        print(f"offhook E-model MOS vs measured PESQ (nb): mean |difference| "
              f"{statistics.fmean(gaps):.2f} (goal <= 0.3) over {len(gaps)} calls")  # fmt: skip


def _print_reported(
    conditions: list[str], codecs: list[str], results: dict[tuple[str, str, str], Result | None]
) -> None:
    """The offhook callee's reported MOS against PESQ, with what the MOS was made of."""
    print("reported MOS (the callee's E-model) vs PESQ nb, offhook pair; inputs of the last "
          "sample: network loss, concealed beyond it, bridge playout gaps, jitter buffer "
          "delay")  # fmt: skip
    print("condition  codec  reported  PESQ nb  difference  loss %  concealed %  gaps %  jb ms")
    differences, signed = [], []
    for condition in conditions:
        for codec in codecs:
            ours = results.get((condition, codec, "offhook"))
            if ours is None or ours.outcome.reported_mos is None:
                continue
            q = ours.outcome.quality
            reported, measured = ours.outcome.reported_mos, ours.scores.narrowband
            differences.append(abs(reported - measured))
            signed.append(reported - measured)
            print(f"{condition:<10} {codec:<5}  {reported:8.2f}  {measured:7.2f}  "
                  f"{reported - measured:+10.2f}  {q.get('loss_pct', 0):6.2f}  "
                  f"{q.get('concealed_pct', 0):11.2f}  {q.get('playout_gaps_pct', 0):6.2f}  "
                  f"{q.get('jitter_buffer_ms', 0):5.0f}")  # fmt: skip
    if differences:
        print(f"reported vs PESQ nb: mean |difference| {statistics.fmean(differences):.2f}, "
              f"mean difference {statistics.fmean(signed):+.2f} over {len(differences)} "
              "calls (goal: mean |difference| <= 0.3)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
