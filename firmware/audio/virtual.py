"""ALSA PCMs without a sound card: alsa-lib ``file`` plugins over ``null``, for tests and benches.

Put ``ASOUNDRC`` in ``$HOME/.asoundrc`` (alsa-lib's default config loads it); then
``speaker_pcm(path)`` plays into a raw S16_LE file and ``mic_pcm(path)`` captures from one.
These PCMs are unclocked: PcmStream paces them by the wall clock.
"""

from __future__ import annotations

from pathlib import Path

ASOUNDRC = """\
pcm.offhook_speaker {
    @args [ FILE ]
    @args.FILE { type string }
    type file
    slave.pcm "null"
    file $FILE
    format "raw"
}
pcm.offhook_mic {
    @args [ INFILE ]
    @args.INFILE { type string }
    type file
    slave.pcm "null"
    file "/dev/null"
    infile $INFILE
    format "raw"
}
"""


def speaker_pcm(path: str | Path) -> str:
    """PCM name that writes what is played to ``path`` (raw S16_LE)."""
    return f"offhook_speaker:FILE={path}"


def mic_pcm(path: str | Path) -> str:
    """PCM name that captures the raw S16_LE samples in ``path`` (keep it longer than the read)."""
    return f"offhook_mic:INFILE={path}"


def write_asoundrc(home: Path) -> Path:
    rc = home / ".asoundrc"
    rc.write_text(ASOUNDRC)
    return rc
