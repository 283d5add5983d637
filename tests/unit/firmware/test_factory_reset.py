"""Factory reset on a temporary data directory laid out as the image's /data/offhook."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offhook.contract.config import PhoneConfig, load_config, save_config
from offhook.firmware.factory_reset import PENDING, FactoryResetError, FactoryResetter


def phone_data(root: Path) -> Path:
    data = root / "offhook"
    (data / "provisioning/config").mkdir(parents=True)
    (data / "provisioning/outbox/cdrs").mkdir(parents=True)
    (data / "system").mkdir()
    config = PhoneConfig.model_validate(
        {"accounts": [{"user": "1001", "domain": "pbx", "password": "s3cret"}]}
    )
    save_config(config, data / "phone.toml")
    (data / "provisioning/credential.json").write_text('{"device_id": "d", "secret": "x"}')
    (data / "provisioning/pinned-ca.der").write_bytes(b"\x30\x82")
    (data / "provisioning/config/lkg.json").write_text("{}")
    (data / "provisioning/outbox/cdrs/1-a.json").write_text("{}")
    (data / "history.jsonl").write_text('{"id": "a"}\n')
    (data / "volume.json").write_text('{"ring": 10}')
    (data / "system/machine-id").write_text("0" * 31 + "1\n")
    return data


def test_reset_leaves_only_a_default_config(tmp_path: Path) -> None:
    data = phone_data(tmp_path)
    FactoryResetter(data).reset()
    assert sorted(p.name for p in data.iterdir()) == ["phone.toml"]
    assert load_config(data / "phone.toml") == PhoneConfig()
    assert "s3cret" not in (data / "phone.toml").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["offhook"]  # nothing left beside it


def test_a_reset_interrupted_by_a_power_cut_is_finished_at_start(tmp_path: Path) -> None:
    data = phone_data(tmp_path)
    # the power went after the marker was made and two entries had moved
    (data / PENDING).mkdir()
    os.rename(data / "history.jsonl", data / PENDING / "history.jsonl")
    os.rename(data / "provisioning", data / PENDING / "provisioning")
    resetter = FactoryResetter(data)
    assert resetter.finish_interrupted()
    assert sorted(p.name for p in data.iterdir()) == ["phone.toml"]
    assert load_config(data / "phone.toml") == PhoneConfig()
    assert not resetter.finish_interrupted()  # nothing left to finish


def test_a_start_without_a_reset_changes_nothing(tmp_path: Path) -> None:
    data = phone_data(tmp_path)
    before = sorted(str(p) for p in data.rglob("*"))
    assert not FactoryResetter(data).finish_interrupted()
    assert sorted(str(p) for p in data.rglob("*")) == before


def test_missing_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FactoryResetError, match="not a directory"):
        FactoryResetter(tmp_path / "nope").reset()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only directories anyway")
def test_a_read_only_data_directory_is_reported(tmp_path: Path) -> None:
    data = phone_data(tmp_path)
    data.chmod(0o500)
    try:
        with pytest.raises(FactoryResetError, match="Permission denied"):
            FactoryResetter(data).reset()
    finally:
        data.chmod(0o700)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a mount namespace"
)
def test_a_read_only_data_partition_is_reported_and_nothing_lost(tmp_path: Path) -> None:
    data = phone_data(tmp_path)
    before = sorted(str(p) for p in data.rglob("*"))
    code = (
        "from pathlib import Path\n"
        "from offhook.firmware.factory_reset import FactoryResetter, FactoryResetError\n"
        "try:\n"
        f"    FactoryResetter(Path({str(data)!r})).reset()\n"
        "except FactoryResetError as exc:\n"
        "    print(exc)\n"
    )
    script = (
        f"mount --bind {data} {data} && mount -o remount,bind,ro {data} && "
        f"{sys.executable} -c {shlex.quote(code)}"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Read-only file system" in done.stdout
    assert sorted(str(p) for p in data.rglob("*")) == before
