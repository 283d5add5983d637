"""Run the SIP engine alone: ``python -m offhook.firmware.sip CONFIG.toml [AUDIO OPTIONS]``.

Prints every engine event as one key=value line on stdout and reads commands from stdin, one per
line: ``call <target>``, ``answer <id>``, ``hangup <id>``, ``dtmf <id> <digits>``,
``transfer <id> <target>`` (REFER), ``replace <id> <other id>`` (attended transfer: REFER with
Replaces of the other call), ``calls``, ``quit``. Incoming calls are answered 180 Ringing at once
(the engine leaves that decision to its user). Audio: ``--alsa`` connects calls to the
configured ``audio.capture``/``audio.playback`` PCMs through the phone's own ALSA bridge
(``AlsaAudio``), as the phone process does; ``--tone HZ`` sends a sine; ``--play RAW`` sends a
16-bit mono raw file at ``audio.sample_rate`` and ``--record RAW`` writes what was received, both
at the pace of pjsua's clock, without the bridge; ``--echo`` sends back what it receives.
Useful for diagnostics on a phone, and for benchmarks and tests that need the engine in its own
process (pjsua2 allows one per process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from offhook.contract.config import load_config
from offhook.firmware.audio import AlsaAudio
from offhook.firmware.events import (
    Answer,
    AttendedTransfer,
    CallIncoming,
    CallQuality,
    Hangup,
    MakeCall,
    Ringing,
    SendDtmf,
    Transfer,
)
from offhook.firmware.ports import AudioEndpoint
from offhook.firmware.sip.engine import SipEngine
from offhook.firmware.sip.file_endpoint import EchoEndpoint, FileEndpoint
from offhook.firmware.sip.sine import SineEndpoint

_print_lock = threading.Lock()


def _print_event(event: object) -> None:
    fields: dict[str, object] = {}
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        fields = dataclasses.asdict(event)
    parts = [f"event={type(event).__name__}"]
    for key, value in fields.items():
        value = getattr(value, "value", value)  # enums
        parts.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    with _print_lock:
        print(" ".join(parts), flush=True)


def _command(engine: SipEngine, line: str) -> bool:
    """Execute one stdin line; False means quit."""
    words = line.split()
    if not words:
        return True
    verb, args = words[0], words[1:]
    try:
        if verb == "quit":
            return False
        if verb == "call" and len(args) == 1:
            engine.submit(MakeCall(0, args[0]))
        elif verb == "answer" and len(args) == 1:
            engine.submit(Answer(int(args[0])))
        elif verb == "hangup" and len(args) == 1:
            engine.submit(Hangup(int(args[0])))
        elif verb == "dtmf" and len(args) == 2:
            engine.submit(SendDtmf(int(args[0]), args[1]))
        elif verb == "transfer" and len(args) == 2:
            engine.submit(Transfer(int(args[0]), args[1]))
        elif verb == "replace" and len(args) == 2:
            engine.submit(AttendedTransfer(int(args[0]), int(args[1])))
        elif verb == "calls":
            with _print_lock:
                print("calls=" + json.dumps(engine.calls_info()), flush=True)
        else:
            raise ValueError(f"unknown command {line!r}")
    except ValueError as exc:
        with _print_lock:
            print(f"error={json.dumps(str(exc))}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offhook.firmware.sip", description=__doc__)
    parser.add_argument("config", help="phone config (TOML)")
    sound = parser.add_mutually_exclusive_group()
    sound.add_argument("--tone", type=float, default=0.0, help="send a sine of this frequency")
    sound.add_argument("--alsa", action="store_true", help="calls use the configured ALSA PCMs")
    sound.add_argument("--echo", action="store_true", help="send back what calls receive")
    parser.add_argument("--play", type=Path, help="send this raw S16_LE mono file in calls")
    parser.add_argument("--record", type=Path, help="write what calls received to this raw file")
    args = parser.parse_args(argv)
    if (args.play or args.record) and (args.alsa or args.tone or args.echo):
        parser.error("--play/--record replace --alsa, --tone and --echo")
    config = load_config(args.config)
    logging.basicConfig(level=config.logging.level.upper(), stream=sys.stderr)
    audio: AudioEndpoint | None = None
    handset: AlsaAudio | None = None
    files: FileEndpoint | None = None
    if args.alsa:
        audio = handset = AlsaAudio(config.audio)
        handset.start()
    elif args.tone:
        audio = SineEndpoint(args.tone, config.audio.sample_rate)
    elif args.echo:
        audio = EchoEndpoint(config.audio.sample_rate)
    elif args.play or args.record:
        audio = files = FileEndpoint(args.play, args.record, config.audio.sample_rate)
    engine: SipEngine | None = None

    def on_event(event: object) -> None:
        _print_event(event)
        if isinstance(event, CallQuality) and engine is not None:
            # what the MOS was made of (jitter buffer, concealment, the bridge's playout gaps)
            calls = [c for c in engine.calls_info() if c.get("id") == event.call_id]
            stats = (calls[0].get("stats") if calls else None) or {}
            parts = " ".join(f"{key}={json.dumps(value)}" for key, value in stats.items())
            with _print_lock:
                print(f"event=QualityDetail call_id={event.call_id} {parts}", flush=True)
        if isinstance(event, CallIncoming) and engine is not None:
            engine.submit(Ringing(event.call_id))

    engine = SipEngine(config, on_event, audio)
    engine.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def read_stdin() -> None:
        for line in sys.stdin:
            if not _command(engine, line):
                break
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    with _print_lock:
        print("ready ports=" + json.dumps(engine.ports), flush=True)
    stop.wait()
    engine.stop()
    if files is not None:
        files.close()
    if handset is not None:
        handset.stop()
        # what the bridge did during the run (underruns, drift corrections...), for diagnostics
        stats = " ".join(f"{key}={value}" for key, value in handset.stats.items())
        with _print_lock:
            print(f"event=AudioStats {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
