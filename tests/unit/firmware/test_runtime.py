"""Runtime: the real Phone driven through the event loop, timers, history and real ALSA audio."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from offhook.contract.config import parse_config
from offhook.firmware import events as ev
from offhook.firmware.audio.bridge import AlsaAudio
from offhook.firmware.phone import Phone
from offhook.firmware.runtime import Runtime
from offhook.firmware.state_files import CallHistoryFile, VolumeFile
from offhook.firmware.timers import TimerWheel
from tests.fixtures.alsa import AlsaFiles, alsa_files, alsa_home  # noqa: F401 (fixtures)
from tests.fixtures.waiting import wait_until

ACCOUNT = {"user": "1001", "domain": "127.0.0.1", "password": "x"}


wait_for = partial(wait_until, timeout=10.0, interval=0.01)


def make_runtime(tmp_path: Path, **overrides) -> Runtime:
    config = parse_config({"accounts": [ACCOUNT], **overrides})
    return Runtime(Phone(config), history=CallHistoryFile(tmp_path / "history.jsonl"))


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path, dialplan={"offhook_timeout_s": 0.3})
    rt.start()
    yield rt
    rt.stop()


def screen_text(rt: Runtime) -> str:
    return " ".join(rt.snapshot()["screen"])


def test_phone_timer_fires_through_the_timer_wheel(runtime: Runtime) -> None:
    runtime.post(ev.HookChanged(True))
    wait_for(lambda: "Please hang up" in screen_text(runtime))
    assert runtime.snapshot()["hook"] == "off"


def test_finished_call_lands_in_history_file(runtime: Runtime, tmp_path: Path) -> None:
    runtime.post(ev.CallIncoming(7, 0, "sip:1002@127.0.0.1", "Bob"))
    wait_for(lambda: any(c["state"] == "incoming" for c in runtime.snapshot()["calls"]))
    runtime.post(ev.HookChanged(True))
    runtime.post(ev.CallStateChanged(7, ev.CallState.CONFIRMED, 200, "OK", codec="PCMU"))
    wait_for(lambda: [c["state"] for c in runtime.snapshot()["calls"]] == ["confirmed"])
    runtime.post(ev.HookChanged(False))
    history = tmp_path / "history.jsonl"
    wait_for(lambda: history.exists() and history.read_text().strip() != "")
    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["direction"] == "incoming"
    assert records[0]["remote_uri"] == "sip:1002@127.0.0.1"
    assert records[0]["disposition"] == "answered"


def test_loop_turns_while_idle(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    rt.tick_s = 0.05
    rt.start()
    try:
        first = rt.last_beat
        wait_for(lambda: rt.last_beat > first and rt.handled >= 3)
    finally:
        rt.stop()


def test_call_runs_on_the_loop_thread(runtime: Runtime) -> None:
    assert runtime.call(lambda: threading.current_thread().name) == "runtime"
    with pytest.raises(ZeroDivisionError):
        runtime.call(lambda: 1 / 0)


def test_tones_reach_real_alsa_audio(tmp_path: Path, alsa_files: AlsaFiles) -> None:  # noqa: F811
    config = parse_config(
        {"accounts": [ACCOUNT], "audio": {"playback": alsa_files.speaker, "capture": "null"}}
    )
    audio = AlsaAudio(config.audio)
    audio.start()
    rt = Runtime(Phone(config), audio=audio)
    rt.start()
    try:
        rt.post(ev.HookChanged(True))
        wait_for(lambda: audio.tone is ev.Tone.DIAL)
        rt.post(ev.KeyPressed("5"))
        wait_for(lambda: audio.tone is None)
        wait_for(lambda: any(abs(s) > 1000 for s in alsa_files.speaker_samples()))
    finally:
        rt.stop()
        audio.stop()


def test_the_speakerphone_turns_echo_cancellation_on_and_the_handset_off(
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    config = parse_config(
        {"accounts": [ACCOUNT], "audio": {"playback": alsa_files.speaker, "capture": "null"}}
    )
    audio = AlsaAudio(config.audio)
    audio.start()
    rt = Runtime(Phone(config), audio=audio)
    rt.start()
    try:
        rt.post(ev.KeyPressed("speaker"))  # on-hook: hands-free dialling
        wait_for(lambda: audio.echo_cancelling)
        rt.post(ev.HookChanged(True))  # lifting the handset takes the call off the speaker
        wait_for(lambda: not audio.echo_cancelling and audio.tone is ev.Tone.DIAL)
        rt.post(ev.KeyPressed("speaker"))  # back to the speaker, handset still up
        wait_for(lambda: audio.echo_cancelling)
        rt.post(ev.KeyPressed("speaker"))  # and off again: the handset carries on
        wait_for(lambda: not audio.echo_cancelling)
        rt.post(ev.HookChanged(False))
        assert rt.snapshot()["audio_path"] == "none" and not audio.echo_cancelling
    finally:
        rt.stop()
        audio.stop()


def test_timer_wheel_replaces_and_cancels() -> None:
    fired: list[str] = []
    wheel = TimerWheel(fired.append)
    wheel.start()
    try:
        wheel.set("a", 30)
        wheel.set("a", 0.01)  # replaces the 30 s one
        wheel.set("b", 0.01)
        wheel.cancel("b")
        wheel.set("c", 0.02)
        wait_for(lambda: "c" in fired)
        assert fired.count("a") == 1
        assert "b" not in fired
        assert wheel.pending() == []
    finally:
        wheel.stop()


class OutboxSink:
    """The runtime hands records to ``enqueue``; the real durable Outbox keeps them."""

    def __init__(self, directory: Path) -> None:
        from offhook.firmware.provisioning.outbox import Outbox

        self.outbox = Outbox(directory)

    def enqueue(self, kind: str, record: dict) -> None:
        self.outbox.put(kind, record)


def test_cdr_and_quality_reach_the_outbox(tmp_path: Path) -> None:
    sink = OutboxSink(tmp_path / "outbox")
    config = parse_config({"accounts": [ACCOUNT]})
    rt = Runtime(Phone(config), outbox=sink)
    rt.start()
    try:
        rt.post(ev.CallIncoming(7, 0, "sip:1002@127.0.0.1", "Bob"))
        rt.post(ev.HookChanged(True))
        rt.post(ev.CallStateChanged(7, ev.CallState.CONFIRMED, 200, "OK", "sip:1002@127.0.0.1"))
        rt.post(ev.CallQuality(7, "PCMU", 2.0, 0.0, 12.0, 4.3))
        rt.post(ev.CallQuality(7, "PCMU", 3.0, 0.5, 14.0, 4.2))
        rt.post(ev.HookChanged(False))
        wait_for(lambda: len(sink.outbox.pending("quality", 10)) == 2)
    finally:
        rt.stop()
    cdrs = sink.outbox.pending("cdrs", 10)
    assert len(cdrs) == 1
    quality = sink.outbox.pending("quality", 10)
    assert {q["call_record_id"] for q in quality} == {cdrs[0]["id"]}
    assert [q["mos"] for q in quality] == [4.3, 4.2]
    assert all(q["time"].endswith("Z") and q["codec"] == "PCMU" for q in quality)


def test_quality_goes_to_the_record_of_its_own_call_not_another_from_the_same_caller(
    tmp_path: Path,
) -> None:
    sink = OutboxSink(tmp_path / "outbox")
    config = parse_config({"accounts": [ACCOUNT]})
    rt = Runtime(Phone(config), outbox=sink, history=CallHistoryFile(tmp_path / "h.jsonl"))
    rt.start()
    caller = "sip:1002@127.0.0.1"
    try:
        rt.post(ev.CallIncoming(7, 0, caller, "Bob"))
        rt.post(ev.HookChanged(True))
        rt.post(ev.CallStateChanged(7, ev.CallState.CONFIRMED, 200, "OK", caller))
        rt.post(ev.CallQuality(7, "PCMU", 2.0, 0.0, 12.0, 4.3))
        # the same caller calls again while we talk; declining it must not take call 7's samples
        rt.post(ev.CallIncoming(8, 0, caller, "Bob"))
        rt.post(ev.KeyPressed("cancel"))
        wait_for(lambda: len(sink.outbox.pending("cdrs", 10)) == 1)
        rt.post(ev.CallQuality(7, "PCMU", 3.0, 0.5, 14.0, 4.2))
        rt.post(ev.HookChanged(False))
        wait_for(lambda: len(sink.outbox.pending("cdrs", 10)) == 2)
    finally:
        rt.stop()
    rejected, answered = sink.outbox.pending("cdrs", 10)
    assert (rejected["disposition"], answered["disposition"]) == ("rejected", "answered")
    assert "call_id" not in answered  # local engine ids stay on the device
    quality = sink.outbox.pending("quality", 10)
    assert [q["mos"] for q in quality] == [4.3, 4.2]
    assert {q["call_record_id"] for q in quality} == {answered["id"]}
    history = CallHistoryFile(tmp_path / "h.jsonl").records()
    assert [r["call_id"] for r in history] == [8, 7]


def test_password_change_is_judged_by_a_fresh_registration(tmp_path: Path) -> None:
    from offhook.firmware.provisioned_apply import apply_and_wait_registered

    rt = make_runtime(tmp_path)
    rt.start()
    try:
        rt.post(ev.RegistrationChanged(0, True, 200))
        wait_for(lambda: rt.snapshot()["registration"][0]["registered"])
        unchanged = parse_config({"accounts": [ACCOUNT], "features": {"dnd": True}})
        assert apply_and_wait_registered(rt, unchanged, timeout_s=5) is None

        changed = parse_config({"accounts": [{**ACCOUNT, "password": "new"}]})
        result: list[str | None] = []
        applier = threading.Thread(
            target=lambda: result.append(apply_and_wait_registered(rt, changed, timeout_s=10))
        )
        applier.start()
        wait_for(lambda: rt.snapshot()["registration"][0]["status"] == 0)
        assert not result  # still waiting: the old registration no longer counts
        rt.post(ev.RegistrationChanged(0, False, 403, "Forbidden"))
        applier.join(15)
        assert result and result[0] is not None and "registration failed 403" in result[0]

        again = parse_config({"accounts": [{**ACCOUNT, "password": "newer"}]})
        assert "not registered within" in str(apply_and_wait_registered(rt, again, timeout_s=0.5))
    finally:
        rt.stop()


def test_volume_keys_reach_alsa_audio_and_survive_a_restart(
    tmp_path: Path,
    alsa_files: AlsaFiles,  # noqa: F811
) -> None:
    config = parse_config(
        {"accounts": [ACCOUNT], "audio": {"playback": alsa_files.speaker, "capture": "null"}}
    )
    path = tmp_path / "state" / "volume.json"
    for restart in range(2):
        volumes = VolumeFile(path)
        audio = AlsaAudio(config.audio)
        rt = Runtime(Phone(config, volumes=volumes.levels()), audio=audio, volumes=volumes)
        rt.start()
        try:
            if restart == 0:
                assert (audio.volume, audio.ring_volume) == (80, 80)
                rt.post(ev.KeyPressed("vol_down"))  # idle: the ringer
                rt.post(ev.HookChanged(True))
                rt.post(ev.KeyPressed("vol_down"))  # off-hook: the speaker
                rt.post(ev.KeyPressed("vol_down"))
                wait_for(lambda a=audio: a.volume == 60)
                wait_for(lambda: path.exists() and json.loads(path.read_text())["speaker"] == 60)
            else:
                # the kept levels are back in the audio and in the state
                assert rt.snapshot()["volume"] == {"speaker": 60, "ring": 70}
                assert (audio.volume, audio.ring_volume) == (60, 70)
        finally:
            rt.stop()
    assert json.loads(path.read_text()) == {"ring": 70, "speaker": 60}


def test_volume_file_ignores_garbage(tmp_path: Path) -> None:
    path = tmp_path / "volume.json"
    path.write_text('{"speaker": 250, "ring": 30, "other": 1}')
    assert VolumeFile(path).levels() == {"ring": 30}
    path.write_text("not json")
    assert VolumeFile(path).levels() == {}


def test_apply_config_future_gets_the_phones_verdict(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    rt.start()
    try:
        rt.post(ev.RegistrationChanged(0, True, 200))
        unchanged = parse_config({"accounts": [ACCOUNT], "features": {"dnd": True}})
        assert rt.apply_config(unchanged).result(10) is None

        changed = parse_config({"accounts": [{**ACCOUNT, "password": "new"}]})
        verdict = rt.apply_config(changed)
        wait_for(lambda: rt.snapshot()["registration"][0]["status"] == 0)
        assert not verdict.done()  # the old registration no longer counts
        rt.post(ev.RegistrationChanged(0, False, 403, "Forbidden"))
        error = verdict.result(10)
        assert error is not None and "registration failed 403" in error
    finally:
        rt.stop()
