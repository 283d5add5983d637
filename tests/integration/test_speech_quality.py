"""Speech end to end through the phone's own audio path, scored with ITU-T P.862 (PESQ).

Two phone engines, each with the phone's ALSA bridge on alsa-lib file PCMs, call each other
through Kamailio and the media relay. On a clean network the callee's speaker must play the
caller's speech, recognisably and in one piece: aligned on the reference and above a PESQ floor
that every broken path falls below (measured with the same scorer: silence or noise cannot be
aligned at all, a wrong sample rate cannot either, clipping scores 1.21 and losing every other
frame 1.20, repeating half of every frame 1.32), while a working path scores 3.9-4.0 on a quiet
host. On a host starved of CPU (load 16 on 2 cores) the bridge's rings under- and overrun and a
single call scored 1.4-3.0, so the test places up to three calls and needs one above the floor:
a broken path fails all three. With 10 % of the packets dropped by the relay, the callee's own
E-model MOS must show the loss; with the callee's process stalled now and then on a clean
network (what a starved host does to the bridge), its MOS must show the gaps it played.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from offhook.firmware.devtools.impairment import Impairment
from tests.fixtures.engine_process import EngineProcess
from tests.fixtures.speech import pesq_scores
from tests.fixtures.speech_calls import SpeechRig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PCMU_FLOOR_NB = 1.8  # broken paths: <= 1.32; working: 1.4-3.0 (starved host) to 4.0
ATTEMPTS = 3


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechRig]:
    with SpeechRig(Path(tmp_path_factory.mktemp("speech"))) as running:
        yield running


def test_clean_network_pcmu_speech_arrives_undistorted(rig: SpeechRig) -> None:
    tries = []
    for _ in range(ATTEMPTS):
        outcome = rig.call("offhook", "PCMU", Impairment(), seed=1)
        assert outcome.relay is not None and outcome.relay.to_answerer.decisions.lost == 0
        # the callee measured a clean stream too (its MOS also counts its own bridge's gaps)
        assert outcome.quality.get("loss_pct") == 0.0 and outcome.reported_mos is not None
        scores = pesq_scores(rig.reference, outcome.recording, outcome.rate)
        tries.append((scores, outcome.bridge.get("callee", {})))
        if scores.narrowband > PCMU_FLOOR_NB:
            return
    pytest.fail(f"no call above the PESQ floor {PCMU_FLOOR_NB}: {tries}")


def test_the_callee_reports_the_loss_the_relay_made(rig: SpeechRig) -> None:
    outcome = rig.call("offhook", "PCMU", Impairment(loss_pct=10), seed=1)
    assert outcome.relay is not None
    assert 0.05 < outcome.relay.to_answerer.decisions.loss_fraction < 0.15
    # E-model with 10 % loss and PCMU's packet-loss robustness: clearly below a clean call's 4.4
    assert outcome.reported_mos is not None and outcome.reported_mos < 4.0


def stall(callee: EngineProcess, times: int = 8, stopped_s: float = 0.25) -> None:
    """Freeze the callee's whole process now and then: its bridge's rings under- and overrun
    and the playback device falls behind, as on a host starved of CPU. Packets keep arriving
    (the relay loses none), so the network looks clean to the E-model's network figures."""
    assert callee.process is not None
    for _ in range(times):
        os.kill(callee.process.pid, signal.SIGSTOP)
        time.sleep(stopped_s)
        os.kill(callee.process.pid, signal.SIGCONT)
        time.sleep(0.5)


def test_the_callee_reports_the_gaps_its_bridge_played(rig: SpeechRig) -> None:
    quiet = rig.call("offhook", "PCMU", Impairment(), seed=1)
    outcome = rig.call("offhook", "PCMU", Impairment(), seed=1, during=stall)
    assert outcome.relay is not None and outcome.relay.to_answerer.decisions.lost == 0
    assert outcome.quality.get("loss_pct") == 0.0
    # each stall is a gap or more; the call without stalls had its start-up ones only
    gaps, quiet_gaps = outcome.quality["playout_gaps_pct"], quiet.quality["playout_gaps_pct"]
    assert gaps > quiet_gaps + 0.5, (outcome.bridge.get("callee"), quiet.bridge.get("callee"))
    assert outcome.reported_mos is not None and quiet.reported_mos is not None
    assert outcome.reported_mos < quiet.reported_mos
    # network figures alone would say 4.3-4.4 (clean, a little jitter after each stall)
    assert outcome.reported_mos is not None and outcome.reported_mos < 3.8, outcome.quality
