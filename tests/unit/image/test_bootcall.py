"""The boot test's call plumbing on real components, without booting an image: the host side of the
emulated sound card (alsa-lib file PCMs, through pyalsaaudio), the tone measure, a WAV still being
written, the Kamailio config (checked by Kamailio itself), QEMU's QMP port forward on a real QEMU,
and the QEMU machine per architecture."""

from __future__ import annotations

import math
import os
import socket
import struct
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest

from offhook.image import bootcall
from offhook.image.kamailio_cfg import registrar_config
from offhook.image.qemu import (
    AUDIO_CAPTURE_PCM,
    AUDIO_PLAYBACK_PCM,
    AUDIO_RATE,
    asoundrc,
    qemu_command,
)

KAMAILIO = "/usr/sbin/kamailio"


def test_tone_share_finds_the_tone_and_not_the_other() -> None:
    tone = array("h", bootcall.tone_pcm(1000, 1.0, AUDIO_RATE))
    assert bootcall.tone_share(tone, 1000, AUDIO_RATE) > 0.95
    assert bootcall.tone_share(tone, 800, AUDIO_RATE) < 0.05
    assert bootcall.tone_share(array("h", bytes(AUDIO_RATE * 2)), 1000, AUDIO_RATE) == 0.0


def test_tone_share_survives_xrun_gaps_and_a_few_hz_of_drift() -> None:
    """What the phone's line out showed under a loaded host: 10-20 % of the samples zero (xruns,
    in 10 ms periods) and the tone a few Hz off."""
    exact = array("h", bootcall.tone_pcm(1000, 1.0, 16000))
    drifted = array("h", (round(8000 * math.sin(2 * math.pi * 1004 * i / 16000))
                          for i in range(16000)))  # fmt: skip
    for samples in (exact, drifted):
        for start in range(0, len(samples), 1600):  # a 10 ms gap in every 100 ms
            samples[start : start + 160] = array("h", bytes(320))
        assert bootcall.tone_share(samples, 1000, 16000) > 0.7
        assert bootcall.tone_share(samples, 800, 16000) < 0.1


def test_tone_needs_a_whole_number_of_samples_per_cycle() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        bootcall.tone_pcm(700, 1.0, 16000)


def test_wav_tail_reads_a_recording_that_is_still_being_written(tmp_path: Path) -> None:
    """sndfile's header sizes are final only when baresip closes the file."""
    pcm = bootcall.tone_pcm(800, 2.0, 16000)
    stereo = array("h")
    for sample in array("h", pcm):
        stereo.extend((sample, 0))
    header = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 2, 16000, 16000 * 4, 4, 16) + b"data" + struct.pack("<I", 0)  # fmt: skip
    wav = tmp_path / "dump-dec.wav"
    wav.write_bytes(header + stereo.tobytes())
    samples, rate = bootcall.wav_tail(wav, 1.0)
    assert rate == 16000 and len(samples) == 16000
    assert bootcall.tone_share(samples, 800, rate) > 0.95
    assert bootcall.wav_tail(tmp_path / "missing.wav", 1.0) == (array("h"), 0)


def test_host_side_of_the_sound_card_is_real_alsa(tmp_path: Path) -> None:
    """The PCMs QEMU's alsa backend opens: playback appends raw to a file, capture reads the mic
    file. Opened here through alsa-lib (pyalsaaudio) with the same private asoundrc."""
    played, mic = tmp_path / "played.raw", tmp_path / "mic.raw"
    mic.write_bytes(bootcall.tone_pcm(800, 1.0, AUDIO_RATE))
    (tmp_path / ".asoundrc").write_text(asoundrc(played, mic))
    script = f"""
import alsaaudio
kw = dict(channels=1, rate={AUDIO_RATE}, format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=160)
out = alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, device="{AUDIO_PLAYBACK_PCM}", **kw)
tone = open("{mic}", "rb").read()
for i in range(0, 32000, 320):
    out.write(tone[i:i + 320])
out.close()
cap = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device="{AUDIO_CAPTURE_PCM}", **kw)
got = b""
while len(got) < 8000:
    n, data = cap.read()
    got += data if n > 0 else b""
open("{tmp_path / "captured.raw"}", "wb").write(got)
"""
    subprocess.run([sys.executable, "-c", script], env={**os.environ, "HOME": str(tmp_path)},
                   check=True, timeout=60)  # fmt: skip
    assert bootcall.tone_share(bootcall.raw_window(played, 0, 1.0), 800, AUDIO_RATE) > 0.95
    captured = array("h", (tmp_path / "captured.raw").read_bytes())
    assert bootcall.tone_share(captured, 800, AUDIO_RATE) > 0.95


@pytest.mark.skipif(not os.path.exists(KAMAILIO), reason="kamailio not installed")
def test_call_kamailio_config_is_accepted_by_kamailio(tmp_path: Path) -> None:
    cfg = tmp_path / "k.cfg"
    cfg.write_text(bootcall.kamailio_config(bootcall.free_udp_port(), 40000))
    proc = subprocess.run([KAMAILIO, "-c", "-f", str(cfg)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "m=audio 40000" in cfg.read_text() and "10.0.2.2" in cfg.read_text()


@pytest.mark.skipif(not os.path.exists(KAMAILIO), reason="kamailio not installed")
def test_boot_test_registrar_config_is_accepted_by_kamailio(tmp_path: Path) -> None:
    cfg = tmp_path / "k.cfg"
    cfg.write_text(registrar_config(bootcall.free_udp_port()))
    proc = subprocess.run([KAMAILIO, "-c", "-f", str(cfg)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "offhook-registered" in cfg.read_text() and "nathelper" not in cfg.read_text()


def test_rtp_port_forward_through_qmp_on_a_real_qemu(tmp_path: Path) -> None:
    """hostfwd_add over QMP binds the host port; a refused rule is an error that names it."""
    monitor = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-M", "none", "-display", "none", "-nodefaults",
         "-netdev", "user,id=n0", "-qmp", f"unix:{monitor},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not monitor.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        host_port = bootcall.free_udp_port()
        bootcall.forward_udp(monitor, host_port, 40000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(OSError):
            sock.bind(("127.0.0.1", host_port))  # QEMU holds it now
        with pytest.raises(bootcall.CallError, match=f"{host_port}->40001"):
            bootcall.forward_udp(monitor, host_port, 40001)  # the same host port again
    finally:
        proc.kill()
        proc.wait()


def test_every_machine_gets_the_sound_card_and_its_own_setup(tmp_path: Path) -> None:
    f = tmp_path / "f"
    amd64 = qemu_command(f, f, f, "root=x", 1234, 768, arch="amd64", monitor=tmp_path / "m")
    arm64 = qemu_command(f, f, f, "root=x", 1234, 768, arch="arm64")
    for cmd in (amd64, arm64):
        assert "intel-hda" in cmd and "hda-duplex,audiodev=snd0" in cmd
        assert any(arg.startswith("alsa,id=snd0,out.dev=offhook_played") for arg in cmd)
    assert amd64[0] == "qemu-system-x86_64" and arm64[0] == "qemu-system-aarch64"
    assert arm64[arm64.index("-M") + 1] == "virt"
    assert amd64[amd64.index("-qmp") + 1].startswith("unix:")


@pytest.mark.skipif(not os.path.exists(KAMAILIO), reason="kamailio not installed")
def test_peer_registers_at_the_call_kamailio_and_a_dead_peer_says_so(tmp_path: Path) -> None:
    """The host side of the call as the boot test starts it: Kamailio with the call config and
    baresip registered there as the peer."""
    from offhook.image.boottest import running_kamailio

    rtp = bootcall.free_udp_port()
    with running_kamailio(tmp_path, lambda port: bootcall.kamailio_config(port, rtp)) as (
        port, kamailio_log,
    ), bootcall.running_baresip(tmp_path / "baresip", port) as peer:  # fmt: skip
        deadline = time.monotonic() + 60
        while f"aor=sip:{bootcall.PEER_USER}@" not in kamailio_log.text:
            peer.check_running()
            assert time.monotonic() < deadline, kamailio_log.tail()
            time.sleep(0.1)
        peer.proc.kill()
        peer.proc.wait()
        with pytest.raises(bootcall.CallError, match="baresip exited"):
            peer.check_running()
