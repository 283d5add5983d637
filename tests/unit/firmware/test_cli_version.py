"""``offhook --version``: the installed distribution's version, from the real console script."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("offhook")


@pytest.mark.parametrize("flag", ["--version", "-V", "version"])
def test_version_is_the_installed_distributions(flag: str) -> None:
    done = subprocess.run([str(SCRIPT), flag], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"offhook {metadata.version('offhook')}\n"


def test_usage_names_the_version_flag() -> None:
    done = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert "offhook --version" in done.stdout
