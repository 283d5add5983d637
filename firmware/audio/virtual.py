"""ALSA PCMs without a sound card: alsa-lib ``file`` plugins over ``null``, for tests and benches.

``ALSA_CONFIG`` is a complete, self-contained alsa-lib configuration. Point ``ALSA_CONFIG_PATH``
at a file holding it (``use_private_config``) and a process sees only these PCMs, never the
machine's own configuration:

- ``speaker_pcm(path)`` plays into a raw S16_LE file;
- ``mic_pcm(path)`` captures from one (keep it longer than the capture: after its end alsa-lib
  repeats stale data);
- ``null`` discards playback and captures silence.

alsa-lib re-reads its configuration when ALSA_CONFIG_PATH names other files, so each test can
have its own. These PCMs are unclocked: PcmStream paces them by the wall clock.
"""

from __future__ import annotations

import os
from pathlib import Path

ALSA_CONFIG = """\
pcm.null {
    type null
}
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
    """PCM name that captures the raw S16_LE samples in ``path``."""
    return f"offhook_mic:INFILE={path}"


def write_alsa_config(directory: Path) -> Path:
    path = directory / "alsa.conf"
    path.write_text(ALSA_CONFIG)
    return path


def use_private_config(directory: Path) -> str | None:
    """Write the config into ``directory`` and point this process (and its children) at it.

    Returns the previous ALSA_CONFIG_PATH (None if unset) so the caller can restore it.
    """
    previous = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = str(write_alsa_config(directory))
    return previous
