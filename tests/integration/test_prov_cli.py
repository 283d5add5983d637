"""``offhook fleet`` against a running server's database; database outage and overload -> 503."""
# ruff: noqa: F811  (pytest fixtures imported by name are redefined as parameters)

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from offhook.provisioning.cli import fleet_main
from offhook.provisioning.models import utcnow
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.provisioning_server import (  # noqa: F401 (fixture)
    DeviceCredential,
    ProvisioningServer,
    sqlite_provisioning_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(
    sqlite_provisioning_server: ProvisioningServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):  # type: ignore[no-untyped-def]
    """Run ``offhook fleet`` in-process (same parser and code as the console script)."""
    server = sqlite_provisioning_server
    for name in [k for k in __import__("os").environ if k.startswith("OFFHOOK_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = fleet_main(["--db", server.db_url, "--data-dir", str(server.data_dir), *args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


def test_fleet_cli_end_to_end(
    sqlite_provisioning_server: ProvisioningServer,
    fleet,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = sqlite_provisioning_server
    assert fleet("group", "hq", "--kind", "site")[0] == 0
    assert fleet("add-device", "B8:27:EB:00:00:21", "--group", "hq", "--name", "lobby")[0] == 0
    assert fleet("set", "fleet", "audio.tone_plan=uk", "features.dnd=true")[0] == 0
    assert fleet("set", "group:hq", "audio.ring_volume=33")[0] == 0
    rc, _, err = fleet("set", "fleet", "audio.tone_plan=mars")
    assert rc == 1 and "audio.tone_plan" in err
    rc, _, err = fleet("set", "device:b8:27:eb:99:99:99", "audio.ring_volume=1")
    assert rc == 1 and "not found" in err
    monkeypatch.setenv("LINE_PW", "cli-line-password")
    assert (
        fleet(
            "add-line",
            "b8:27:eb:00:00:21",
            "--extension",
            "3001",
            "--registrar",
            "pbx.local",
            "--password-env",
            "LINE_PW",
        )[0]
        == 0
    )
    rc, out, _ = fleet("tokens", "create", "--max-uses", "5")
    token = out.strip().splitlines()[-1]

    enrolled = server.enroll_request("b8:27:eb:00:00:21", token).json()
    cred = DeviceCredential(server.base_url, enrolled["device_id"], enrolled["secret"], "")
    with cred.client() as client:
        config = client.get("/api/v1/device/config").json()
    assert config["audio"]["tone_plan"] == "uk" and config["audio"]["ring_volume"] == 33
    assert config["features"]["dnd"] is True and config["device"]["name"] == "lobby"
    assert config["accounts"][0]["password"] == "cli-line-password"

    csv_file = tmp_path / "devices.csv"
    csv_file.write_text(
        "mac,serial,name,group\nb8:27:eb:00:00:22,0000abcd,a,hq\n"
        "b8:27:eb:00:00:23,,b,\nnot-a-mac,,c,\nb8:27:eb:00:00:24,,d,nowhere\n"
    )
    rc, out, err = fleet("import", str(csv_file))
    # All or nothing: the bad rows are named and the good ones are not imported either.
    assert rc == 1 and "nothing imported, 2 bad row(s)" in err
    assert "line 4:" in err and "line 5: group 'nowhere' not found" in err
    assert server.admin.get("/devices/b8:27:eb:00:00:22").status_code == 404
    csv_file.write_text(
        "mac,serial,name,group\nb8:27:eb:00:00:22,0000abcd,a,hq\nb8:27:eb:00:00:23,,b,\n"
    )
    rc, out, err = fleet("import", str(csv_file))
    assert rc == 0 and "created 2, updated 0, errors 0" in out, err

    assert server.enroll_request("b8:27:eb:00:00:25", token).status_code == 202
    rc, out, _ = fleet("status", "--status", "pending")
    assert rc == 0 and "b8:27:eb:00:00:25" in out and "b8:27:eb:00:00:21" not in out
    assert fleet("approve", "b8:27:eb:00:00:25")[0] == 0
    assert server.enroll_request("b8:27:eb:00:00:25", token).status_code == 200
    rc, out, _ = fleet("status", "--json")
    summary = json.loads(out)["summary"]
    assert summary["devices"]["approved"] == 4 and summary["devices"]["pending"] == 0

    # resync: NOTIFY to the contact the phone reported.
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(10)
    try:
        with cred.client() as client:
            client.post(
                "/api/v1/device/status",
                json={
                    "id": uuid.uuid4().hex,
                    "time": utcnow().isoformat(),
                    "sip_contact": f"127.0.0.1:{listener.getsockname()[1]}",
                },
            ).raise_for_status()
        rc, out, _ = fleet("resync", "b8:27:eb:00:00:21")
        assert rc == 0 and "resync: 1 device(s)" in out
        assert b"Event: check-sync" in listener.recv(65535)
    finally:
        listener.close()

    # rotate-key: everything re-encrypted; the running server still serves the config.
    old_kid = server.key_file.read_text().split()[0]
    rc, out, _ = fleet("rotate-key", "--drop-old")
    assert rc == 0 and "re-encrypted" in out
    new_kid = re.search(r"new key (\w+)", out).group(1)  # type: ignore[union-attr]
    assert server.key_file.read_text().split()[0] == new_kid and old_kid != new_kid
    db_bytes = b"".join(p.read_bytes() for p in server.data_dir.glob("provisioning.db*"))
    assert f"v1:{new_kid}:".encode() in db_bytes and f"v1:{old_kid}:".encode() not in db_bytes
    fleet("set", "fleet", "audio.ring_volume=44")
    with cred.client() as client:
        config = client.get("/api/v1/device/config").json()
    assert config["accounts"][0]["password"] == "cli-line-password"

    export_file = tmp_path / "export.json"
    assert fleet("export", "--device", "b8:27:eb:00:00:21", "--out", str(export_file))[0] == 0
    exported = json.loads(export_file.read_text())
    assert exported["device"]["mac"] == "b8:27:eb:00:00:21" and len(exported["status_reports"]) == 1
    rc, _, err = fleet("erase", "--device", "b8:27:eb:00:00:21")
    assert rc != 0 or "--yes" in err
    rc, out, _ = fleet("erase", "--extension", "3001", "--yes")
    assert rc == 0 and json.loads(out)["lines"] == 1
    assert fleet("purge")[0] == 0
    assert fleet("revoke", "b8:27:eb:00:00:21")[0] == 0
    with cred.client() as client:
        assert client.get("/api/v1/device/config").json()["code"] == "revoked"
    # The console script itself (subprocess) reaches the same code.
    script = server.fleet("set", "fleet", "nonsense")
    assert script.returncode != 0 and "key=value" in script.stderr
    actions = {e["action"] for e in server.admin.get("/audit", params={"limit": 1000}).json()}
    assert {
        "device.import",
        "privacy.export",
        "privacy.erase",
        "crypto.rotate_key",
        "retention.purge",
        "device.revoke",
        "settings.fleet",
    } <= actions


def test_database_outage_and_overload_answer_503(tmp_path: Path) -> None:
    cluster = PostgresCluster()
    try:
        cluster.start()
        with ProvisioningServer(tmp_path / "a", cluster.create_database()) as server:
            cred = server.enroll("b8:27:eb:00:00:31")
            with cred.client() as client:
                assert client.get("/api/v1/device/config").status_code == 200
                cluster.stop_server()
                down = client.get("/api/v1/device/config")
                assert down.status_code == 503 and down.json()["code"] == "unavailable"
                assert int(down.headers["Retry-After"]) > 0
                cluster.start_server()
                # Pooled connections died with the database: at most a few 503s (the phone
                # retries after Retry-After) until the pool has been replaced.
                statuses = []
                for _ in range(25):
                    statuses.append(client.get("/api/v1/device/config").status_code)
                    if statuses[-1] == 200:
                        break
                assert statuses[-1] == 200 and set(statuses) <= {200, 503}
    finally:
        cluster.close()
    busy_env = {"OFFHOOK_MAX_INFLIGHT": "0", "OFFHOOK_PURGE_INTERVAL_S": "1"}
    with ProvisioningServer(tmp_path / "b", env=busy_env) as busy:
        with busy.device_client() as client:
            reply = client.get("/api/v1/device/config")
        assert reply.status_code == 503 and reply.json()["code"] == "overloaded"
        assert "Retry-After" in reply.headers
        assert busy.admin.get("/status").status_code == 200  # admin API is not throttled
        # The periodic retention purge runs inside the server (and is audited).
        purges: list[dict[str, object]] = []
        for _ in range(100):
            purges = busy.admin.get("/audit", params={"action": "retention.purge"}).json()
            if purges:
                break
            time.sleep(0.2)
        assert purges and purges[0]["actor"] == "system:purge"


def _console(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``offhook`` console entry point in a fresh interpreter, without OFFHOOK_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OFFHOOK_")}
    return subprocess.run(
        [sys.executable, "-m", "offhook.firmware.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def test_data_dir_works_after_the_subcommand(
    sqlite_provisioning_server: ProvisioningServer,
) -> None:
    server = sqlite_provisioning_server
    server.add_device("b8:27:eb:00:00:41")
    after = _console("fleet", "status", "--json", "--data-dir", str(server.data_dir))
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["devices"][0]["mac"] == "b8:27:eb:00:00:41"
    # Before the subcommand as well, and the one after it wins when both are given.
    elsewhere = server.directory / "elsewhere"
    both = _console(
        "fleet",
        "--data-dir",
        str(elsewhere),
        "status",
        "--json",
        "--data-dir",
        str(server.data_dir),
    )
    assert both.returncode == 0, both.stderr
    assert not elsewhere.exists()


def test_only_init_creates_a_fleet(tmp_path: Path) -> None:
    typo = tmp_path / "srv" / "offhok-data"
    for args in (("status",), ("add-device", "b8:27:eb:00:00:42"), ("tokens", "list")):
        refused = _console("fleet", "--data-dir", str(typo), *args)
        assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
        assert f"no fleet database at {typo / 'provisioning.db'}" in refused.stderr
        assert "offhook fleet init" in refused.stderr
    assert not typo.exists() and not (tmp_path / "srv").exists()
    # A database URL without the schema is refused too (and left as it was).
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    refused = _console("fleet", "status", "--db", f"sqlite:///{empty}", "--data-dir", str(typo))
    assert refused.returncode == 1 and "holds no offhook fleet" in refused.stderr
    with sqlite3.connect(empty) as conn:
        assert conn.execute("select count(*) from sqlite_master").fetchone() == (0,)

    made = _console(
        "fleet",
        "init",
        "--data-dir",
        str(typo),
        "--admin",
        "root-admin",
        "--password-env",
        "PW",
        env={"PW": "init-password-1"},
    )
    assert made.returncode == 0, made.stderr
    assert (typo / "provisioning.db").is_file() and (typo / "secret.key").is_file()
    listed = _console("fleet", "status", "--json", "--data-dir", str(typo))
    assert listed.returncode == 0 and json.loads(listed.stdout)["devices"] == []


def test_fleet_resync_is_audited_like_the_api(
    sqlite_provisioning_server: ProvisioningServer, fleet
) -> None:  # type: ignore[no-untyped-def]
    server = sqlite_provisioning_server
    server.admin.post("/groups", json={"name": "resync-site", "kind": "site"}).raise_for_status()
    server.add_device("b8:27:eb:00:00:51", group="resync-site")
    server.add_device("b8:27:eb:00:00:52")
    assert fleet("resync", "--all")[0] == 0
    assert fleet("resync", "--group", "resync-site")[0] == 0
    assert fleet("resync", "b8:27:eb:00:00:52")[0] == 0
    rc, _, err = fleet("resync", "b8:27:eb:00:00:99")
    assert rc == 1 and "not found" in err
    entries = server.admin.get("/audit", params={"limit": 50}).json()
    mine = [
        (e["action"], e["target_type"], e["after"])
        for e in entries
        if e["actor"].startswith("cli:") and e["action"] in ("resync", "device.resync")
    ]
    device = server.admin.get("/devices/b8:27:eb:00:00:52").json()
    group = server.admin.get("/groups/resync-site").json()
    assert mine == [
        ("device.resync", "device", None),
        ("resync", "group", {"group": "resync-site", "devices": 1}),
        ("resync", "devices", {"all": True, "devices": 2}),
    ]
    single = next(e for e in entries if e["action"] == "device.resync")
    assert single["target_id"] == device["id"]
    assert next(e for e in entries if e["target_type"] == "group")["target_id"] == str(group["id"])
    # The REST API writes the same entries through the same function.
    server.admin.post("/resync", json={"group": "resync-site"}).raise_for_status()
    newest = server.admin.get("/audit", params={"limit": 1}).json()[0]
    assert (newest["action"], newest["actor"], newest["after"]) == (
        "resync",
        "admin:fixture-admin",
        {"group": "resync-site", "devices": 1},
    )


def test_api_tokens_from_the_cli(sqlite_provisioning_server: ProvisioningServer, fleet) -> None:  # type: ignore[no-untyped-def]
    server = sqlite_provisioning_server
    server.admin.post(
        "/users", json={"username": "vera", "password": "vera-password-1", "role": "read-only"}
    ).raise_for_status()
    rc, _, err = fleet("api-tokens", "create", "--user", "vera", "--days", "400")
    assert rc == 1 and "at most 90 days" in err
    rc, out, _ = fleet("api-tokens", "create", "--user", "vera", "--name", "dash")
    assert rc == 0, out
    token_id = int(re.search(r"api token id=(\d+)", out).group(1))  # type: ignore[union-attr]
    token = out.strip().splitlines()[-1]
    expires = datetime.fromisoformat(re.search(r"expires=(\S+)", out).group(1))  # type: ignore[union-attr]
    assert timedelta(days=29) < expires - utcnow() <= timedelta(days=30)
    with server.device_client(headers={"Authorization": f"Bearer {token}"}) as vera:
        assert vera.get("/api/v1/admin/me").json() == {"username": "vera", "role": "read-only"}
        rc, out, _ = fleet("api-tokens", "list", "--user", "vera")
        assert rc == 0 and "dash" in out and token not in out
        assert fleet("api-tokens", "revoke", "--id", str(token_id))[0] == 0
        assert vera.get("/api/v1/admin/me").status_code == 401
    actions = [e["action"] for e in server.admin.get("/audit", params={"limit": 5}).json()]
    assert actions[:2] == ["api_token.revoke", "api_token.create"]
