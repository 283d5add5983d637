"""What an idle phone process loads: a real ``offhook phone`` (pjsua2, null ALSA, emulated board)
started and left idle, then asked which modules it holds. Code an idle phone never runs (the
LDAP client, the serial console, the supervisor) must stay out of its memory until used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from offhook.contract.config import save_config
from offhook.firmware.sim import sim_config

pytestmark = pytest.mark.integration

# Runs the phone process's own main(); once it has started and settled (first screens drawn,
# device info posted), prints the loaded modules and ends the phone the normal way.
RUN_AND_REPORT = """
import json, sys, time
from offhook.firmware import phone_process

def report_then_stop(self):
    time.sleep(2.0)
    print(json.dumps(sorted(sys.modules)), flush=True)
    self.stopped.set()

phone_process.PhoneProcess.wait = report_then_stop
sys.exit(phone_process.main(sys.argv[1:]))
"""

NOT_WHILE_IDLE = (
    "ldap3",  # the directory: loaded by the first search (with pyasn1, ~4 MB)
    "pyasn1",
    "serial",  # the bench serial console, only when configured
    "offhook.board.serial_console",
    "offhook.firmware.supervisor",  # the parent's code
    "offhook.firmware.provisioning.client",  # without a provisioning server
)


def test_an_idle_phone_process_does_not_load_what_it_does_not_use(tmp_path: Path) -> None:
    config_path = tmp_path / "phone.toml"
    save_config(sim_config("idle", "", "", "example.invalid"), config_path)
    argv = [sys.executable, "-c", RUN_AND_REPORT, "--config", str(config_path)]
    argv += ["--board", "emulated", "--headless", "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "pjsua2" in modules and "offhook.firmware.runtime" in modules  # it really ran
    loaded = [name for name in NOT_WHILE_IDLE if name in modules]
    assert loaded == [], f"an idle phone process loaded {loaded}"
