"""The boot test's call: the booted phone calls a baresip on the host through a Kamailio on the
host, with audio both ways through the guest's kernel sound driver.

Network: QEMU user networking puts the guest behind a NAT; the guest reaches the host at 10.0.2.2,
the host reaches the guest only through port forwards. Kamailio here does what a PBX's NAT
handling does for a phone behind a router:

- the INVITE from the guest (its Contact holds a private address): its SDP connection address
  becomes 127.0.0.1 and its audio port the host port ``rtp_port``, which the test forwards to the
  guest's real RTP port (read from the SDP Kamailio logs) with ``hostfwd_add`` on QEMU's monitor;
  its Contact becomes the address the request came from (QEMU's NAT mapping to the phone);
- the answer's SDP and Contact (baresip on 127.0.0.1) become 10.0.2.2, which the guest can reach.

Audio: the phone's microphone is QEMU's line in, fed from a raw file with a ``PHONE_TONE_HZ``
tone; baresip answers with its own ``PEER_TONE_HZ`` sine and records what it decodes. "Audio both
ways" means the phone's tone dominates baresip's recording, and the peer's tone dominates what the
phone played to its line out (the raw file QEMU's backend writes).

A machine with no sound card the host can back (``-M raspi3b``) checks an echo instead: the guest's
snd-aloop card loops what the phone plays into what it captures, so baresip's own tone comes back
to baresip only if it went through the phone's playback and capture (a kernel driver both ways),
pjsua2 and RTP in both directions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import socket
import statistics
import struct
import subprocess
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.audio.pcm import rms, tone_power
from offhook.firmware.processes import stop_process
from offhook.image.kamailio_cfg import call_config
from offhook.image.qemu import AUDIO_RATE, HOST_FROM_GUEST

PHONE_USER, PEER_USER = "1001", "2002"  # 2002: the default dial plan sends 4 digits at once
PHONE_TONE_HZ = 800  # what the phone's microphone hears (20 samples a cycle at 16 kHz)
PEER_TONE_HZ = 1000  # what baresip sends
TONE_SHARE = 0.5  # least share of a window's energy at the expected tone
WINDOW_S = 1.0
MIN_RMS = 300.0  # a window this quiet is silence, whatever its spectrum


log = logging.getLogger(__name__)

INVITE_MEDIA = re.compile(r"offhook-invite from=\S+ m=audio (\d+) ")


class CallError(OffhookError, RuntimeError):
    """The call or its audio failed; the message says which step."""


def kamailio_config(port: int, rtp_port: int) -> str:
    return call_config(port, rtp_port, HOST_FROM_GUEST)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_sip_port() -> int:
    """A loopback port free for UDP and TCP, with the next one free for TCP: baresip listens on
    UDP and TCP at its SIP port and for TLS one above."""
    for _ in range(50):
        port = free_udp_port()
        probes = [(socket.SOCK_STREAM, port), (socket.SOCK_STREAM, port + 1)]
        try:
            for kind, number in probes:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind(("127.0.0.1", number))
        except OSError:
            continue
        return port
    raise CallError("no free SIP port pair on loopback for baresip")


# --- audio ---------------------------------------------------------------------------------------


def tone_pcm(hz: int, seconds: float, rate: int = AUDIO_RATE, amplitude: int = 8000) -> bytes:
    """Mono S16_LE sine; ``rate / hz`` must be whole so one cycle repeats without a seam."""
    per_cycle = rate // hz
    if per_cycle * hz != rate:
        raise ValueError(f"{hz} Hz does not divide {rate} Hz")
    cycle = array("h", (round(amplitude * math.sin(2 * math.pi * i / per_cycle))
                        for i in range(per_cycle)))  # fmt: skip
    return cycle.tobytes() * int(seconds * hz)


def tone_share(samples: array, hz: float, rate: int) -> float:
    """Share of the samples' energy within 50 Hz of ``hz``: per 100 ms window, the power in the
    nine 10 Hz bins around ``hz`` over the window's whole power; the median over the windows.
    A band, not one bin: clock drift (a few Hz) and the phase jumps of xruns spread a tone over
    neighbouring bins. A silent window counts as 0."""
    step = rate // 10
    shares = []
    for start in range(0, len(samples) - step + 1, step):
        window = samples[start : start + step]
        level = rms(window)
        if level < MIN_RMS:
            shares.append(0.0)
            continue
        band = sum(tone_power(window, hz + offset, rate) for offset in range(-40, 41, 10))
        shares.append(min(1.0, band / (level * level)))
    return statistics.median(shares) if shares else 0.0


def wav_tail(path: Path, seconds: float) -> tuple[array, int]:
    """The last ``seconds`` of a 16-bit WAV that may still be being written (its header's sizes
    are not final then): first channel, and the rate."""
    raw = path.read_bytes() if path.exists() else b""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return array("h"), 0
    pos, channels, rate, data = 12, 1, 0, b""
    while pos + 8 <= len(raw):
        tag, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        body = raw[pos + 8 : pos + 8 + size] if tag != b"data" else raw[pos + 8 :]
        if tag == b"fmt ":
            channels, rate = struct.unpack("<HI", body[2:8])
        elif tag == b"data":
            data = body
            break
        pos += 8 + size + (size & 1)
    frame = 2 * channels
    data = data[: len(data) - len(data) % frame]
    samples = array("h", data)[::channels]
    return samples[-int(seconds * rate) :] if rate else array("h"), rate


def raw_window(path: Path, start: int, seconds: float, rate: int = AUDIO_RATE) -> array:
    """``seconds`` of mono S16_LE from byte ``start`` of a raw file (shorter if not there yet)."""
    want = int(seconds * rate) * 2
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(want)
    return array("h", data[: len(data) - len(data) % 2])


# --- QEMU monitor ---------------------------------------------------------------------------


def monitor_command(monitor: Path, command: str, timeout: float = 10.0) -> str:
    """One HMP command through QEMU's QMP socket (``human-monitor-command``); its output."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:  # the socket file appears a moment before QEMU listens on it
            try:
                sock.connect(str(monitor))
                break
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        reader = sock.makefile("rb")

        def reply() -> dict:
            while True:  # skip the greeting's and asynchronous events' lines
                line = reader.readline()
                if not line:
                    raise CallError("QEMU's monitor closed the connection")
                message = json.loads(line)
                if "return" in message or "error" in message:
                    return message

        reader.readline()  # greeting
        for request in ({"execute": "qmp_capabilities"},
                        {"execute": "human-monitor-command",
                         "arguments": {"command-line": command}}):  # fmt: skip
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = reply()
            if "error" in answer:
                raise CallError(f"QEMU monitor: {command!r}: {answer['error']}")
    return str(answer.get("return", ""))


def forward_udp(monitor: Path, host_port: int, guest_port: int) -> None:
    out = monitor_command(monitor, f"hostfwd_add n0 udp:127.0.0.1:{host_port}-:{guest_port}")
    if out.strip():  # HMP says nothing when the rule is in place
        raise CallError(f"QEMU refused the RTP port forward {host_port}->{guest_port}: {out}")


# --- baresip on the host ------------------------------------------------------------------------


@dataclass
class Peer:
    directory: Path
    proc: subprocess.Popen

    def recordings(self) -> list[Path]:
        """WAVs of what baresip decoded, newest last."""
        return sorted((self.directory / "recordings").glob("*-dec.wav"),
                      key=lambda p: p.stat().st_mtime)  # fmt: skip

    def log_text(self) -> str:
        log = self.directory / "baresip.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise CallError(f"baresip exited ({self.proc.returncode}):\n{self.log_text()[-1500:]}")


@contextlib.contextmanager
def running_baresip(directory: Path, kamailio_port: int) -> Iterator[Peer]:
    """baresip registered as PEER_USER at the Kamailio, answering at once with its sine."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recordings").mkdir(exist_ok=True)
    sip_port = free_sip_port()
    modules = ["g711.so", "g722.so", "ausine.so", "aubridge.so", "sndfile.so"]
    config = [
        "poll_method epoll",
        f"sip_listen 127.0.0.1:{sip_port}",
        "net_interface 127.0.0.1",
        "audio_player aubridge,offhook-sink",  # unclocked sink that still decodes
        f"audio_source ausine,{PEER_TONE_HZ}",
        "audio_alert aubridge,offhook-alert",
        "ausrc_srate 48000",
        "ausrc_channels 2",
        "module_path /usr/lib/baresip/modules",
        *[f"module {m}" for m in modules],
        f"snd_path {directory / 'recordings'}",
        "module_tmp uuid.so",
        "module_tmp account.so",
    ]
    (directory / "config").write_text("\n".join(config) + "\n")
    (directory / "accounts").write_text(
        f"<sip:{PEER_USER}@127.0.0.1:{kamailio_port}>;auth_pass=unused;answermode=auto;"
        "audio_codecs=G722/16000;regint=600;mwi=no\n"
    )
    (directory / "contacts").write_text("")
    with open(directory / "baresip.log", "ab") as log:
        proc = subprocess.Popen(
            ["baresip", "-f", str(directory)],
            stdin=subprocess.PIPE, stdout=log, stderr=log,  # EOF on stdin would make it quit
        )  # fmt: skip
    try:
        yield Peer(directory, proc)
    finally:
        stop_process(proc)
        if proc.stdin:
            proc.stdin.close()


# --- the call ------------------------------------------------------------------------------------


@dataclass
class CallSetup:
    """What the boot test prepared for the call: the host-side pieces it started."""

    monitor: Path
    rtp_host_port: int
    played: Path  # raw file: what the phone played to its line out
    peer: Peer
    kamailio_text: Callable[[], str]
    echo: bool = False  # the guest loops playback into capture: check baresip hears itself


@dataclass
class CallResult:
    codec: str = ""
    guest_rtp_port: int = 0
    phone_tone_share: float = 0.0  # in baresip's recording, at PHONE_TONE_HZ
    peer_tone_share: float = 0.0  # in what the phone played, at PEER_TONE_HZ
    echo_share: float = 0.0  # echo check: in baresip's recording, at PEER_TONE_HZ
    audio_stats: dict | None = None  # the phone's audio counters (xruns...) after the call


def _state(client) -> dict:
    """The phone's state; {} while the control API does not answer (a loaded guest: a 503 or a
    timeout), so a wait simply tries again."""
    try:
        return client.state()
    except (RuntimeError, OSError, ValueError) as exc:
        log.info("boot call: state not read", extra=kv(error=str(exc)))
        return {}


def _press(action, argument) -> None:
    """Hook or keys. A 503 (the phone's loop answered late) or a timeout still leaves the input
    queued in the phone, so it is not sent again: the next wait sees whether it took effect."""
    try:
        action(argument)
    except (RuntimeError, OSError) as exc:
        log.warning(
            "boot call: input not confirmed by the phone",
            extra=kv(action=action.__name__, argument=repr(argument), error=str(exc)),
        )


def place_call(
    client,
    setup: CallSetup,
    wait: Callable[[str, Callable[[], object]], object],
    mark: Callable[[str], None],
) -> CallResult:
    """Lift the handset, dial the peer, check audio both ways, hang up; ``mark`` each step."""
    result = CallResult()
    _press(client.hook, True)
    _press(client.keys, PEER_USER)
    media = wait("the phone's INVITE at Kamailio",
                 lambda: INVITE_MEDIA.search(setup.kamailio_text()))  # fmt: skip
    if not isinstance(media, re.Match):
        raise CallError(f"waiting for the INVITE returned {media!r}, not the SDP's media line")
    result.guest_rtp_port = int(media.group(1))
    forward_udp(setup.monitor, setup.rtp_host_port, result.guest_rtp_port)

    def confirmed() -> dict | None:
        calls = _state(client).get("calls", [])
        return calls[0] if calls and calls[0].get("state") == "confirmed" else None

    call = wait("the call to connect (baresip answers)", confirmed)
    if not isinstance(call, dict):
        raise CallError(f"waiting for the call returned {call!r}, not the phone's call state")
    result.codec = str(call.get("codec", ""))
    mark("call_connected")
    played_from = setup.played.stat().st_size if setup.played.exists() else 0

    def heard_echo() -> bool:
        recordings = setup.peer.recordings()
        if recordings:
            samples, rate = wav_tail(recordings[-1], WINDOW_S)
            if rate and len(samples) >= rate * WINDOW_S:
                result.echo_share = tone_share(samples, PEER_TONE_HZ, rate)
        return result.echo_share >= TONE_SHARE

    if setup.echo:
        try:
            wait(f"baresip's {PEER_TONE_HZ} Hz back at baresip through the phone's looped "
                 "playback and capture", heard_echo)  # fmt: skip
        except Exception as exc:
            raise CallError(
                f"{exc}\nshare of baresip's {PEER_TONE_HZ} Hz in its own recording: "
                f"{result.echo_share:.2f} (need {TONE_SHARE})"
            ) from None
        return _hang_up(client, wait, mark, result)

    def heard_both() -> bool:
        recordings = setup.peer.recordings()
        if recordings:
            samples, rate = wav_tail(recordings[-1], WINDOW_S)
            if rate and len(samples) >= rate * WINDOW_S:
                result.phone_tone_share = tone_share(samples, PHONE_TONE_HZ, rate)
        size = setup.played.stat().st_size if setup.played.exists() else 0
        if size - played_from >= 2 * AUDIO_RATE * WINDOW_S * 2:  # a second past the connect
            window = raw_window(setup.played, size - int(AUDIO_RATE * WINDOW_S) * 2, WINDOW_S)
            result.peer_tone_share = tone_share(window, PEER_TONE_HZ, AUDIO_RATE)
        return result.phone_tone_share >= TONE_SHARE and result.peer_tone_share >= TONE_SHARE

    try:
        wait("audio both ways (phone's tone at baresip, baresip's tone at the phone's line "
             "out)", heard_both)  # fmt: skip
    except Exception as exc:
        raise CallError(
            f"{exc}\nshare of the phone's {PHONE_TONE_HZ} Hz in baresip's recording: "
            f"{result.phone_tone_share:.2f}; of baresip's {PEER_TONE_HZ} Hz at the phone's "
            f"line out: {result.peer_tone_share:.2f} (need {TONE_SHARE})"
        ) from None
    return _hang_up(client, wait, mark, result)


def _hang_up(client, wait, mark: Callable[[str], None], result: CallResult) -> CallResult:
    mark("audio")
    _press(client.hook, False)
    wait("the call to end", lambda: _state(client).get("calls") == [])
    result.audio_stats = (_state(client).get("device") or {}).get("audio")
    mark("hung_up")
    return result
