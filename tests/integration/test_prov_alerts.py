"""Alerts on the real server (``offhook server``, SQLite) from real phone reports over the
device API: a real SMTP server (aiosmtpd, STARTTLS and AUTH on loopback) and a real HTTPS
webhook receiver (``http.server`` behind TLS) get the notifications; the sweep runs every
second; conditions that clear resolve their alerts by themselves.
"""

from __future__ import annotations

import email
import hashlib
import hmac
import itertools
import json
import re
import secrets
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.provisioning_server import DeviceCredential, ProvisioningServer
from tests.fixtures.rauc_bundles import SigningPair, make_bundle
from tests.fixtures.tls import CertificateSet, make_certificates
from tests.fixtures.waiting import wait_until
from tests.integration.test_firmware_releases import COMPATIBLE, upload

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# This module's loopback ports (42200-42299).
_PORTS = itertools.count(42200)
SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-secret-1"
WEBHOOK_SECRET = "webhook-hmac-key"
PUBLIC_URL = "https://prov.example.test"


# --- the receivers ------------------------------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def about(self, text: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if text in _body(m)]

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.original_content))
        return "250 OK"

    def authenticate(
        self, _server: Any, session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == SMTP_PASSWORD.encode()
        )
        with self.lock:
            self.logins.append(f"{data.login.decode()} tls={session.ssl is not None}")
        return AuthResult(success=ok)


def _body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    return (message["Subject"] or "") + "\n" + (payload.decode() if payload else "")


@dataclass
class Webhook:
    port: int
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    # subject id -> how many posts about it to answer with 500 before 204 again
    failing: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def documents(self, subject_id: str) -> list[dict[str, Any]]:
        with self.lock:
            posts = list(self.posts)
        found = []
        for headers, body in posts:
            doc = json.loads(body)
            if doc["alert"]["subject"]["id"] == subject_id:
                found.append({**doc, "headers": headers, "raw": body})
        return found


def _webhook_server(certs: CertificateSet, port: int) -> tuple[Webhook, ThreadingHTTPServer]:
    hook = Webhook(port)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            subject = json.loads(body)["alert"]["subject"]["id"]
            with hook.lock:
                hook.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = hook.failing.get(subject, 0) > 0
                if failing:
                    hook.failing[subject] -= 1
            self.send_response(500 if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hook, server


@dataclass
class Rig:
    server: ProvisioningServer
    mailbox: Mailbox
    webhook: Webhook


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("alerts")
    certs = make_certificates(tmp / "tls")
    mailbox = Mailbox()
    smtp_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    smtp_tls.load_cert_chain(certs.cert, certs.key)
    smtp_port = next(_PORTS)
    controller = aiosmtpd_controller.Controller(
        mailbox,
        hostname="127.0.0.1",
        port=smtp_port,
        tls_context=smtp_tls,
        require_starttls=True,
        authenticator=mailbox.authenticate,
        auth_required=True,
    )
    controller.start()
    hook, hook_server = _webhook_server(certs, next(_PORTS))
    (tmp / "smtp-password").write_text(SMTP_PASSWORD + "\n")
    (tmp / "webhook-secret").write_text(WEBHOOK_SECRET + "\n")
    env = {
        "OFFHOOK_ALERT_SWEEP_INTERVAL_S": "1",
        "OFFHOOK_ALERT_NOT_SEEN_MINUTES": "30",
        "OFFHOOK_ALERT_RETRY_DELAY_S": "0.2",
        "OFFHOOK_ALERT_SMTP_HOST": "127.0.0.1",
        "OFFHOOK_ALERT_SMTP_PORT": str(smtp_port),
        "OFFHOOK_ALERT_SMTP_SECURITY": "starttls",
        "OFFHOOK_ALERT_SMTP_FROM": "offhook@prov.example.test",
        "OFFHOOK_ALERT_SMTP_TO": "noc@example.test, oncall@example.test",
        "OFFHOOK_ALERT_SMTP_USER": SMTP_USER,
        "OFFHOOK_ALERT_SMTP_PASSWORD_FILE": str(tmp / "smtp-password"),
        "OFFHOOK_ALERT_SMTP_CA_FILE": str(certs.ca_cert),
        "OFFHOOK_ALERT_WEBHOOK_URL": f"https://127.0.0.1:{hook.port}/hooks/offhook",
        "OFFHOOK_ALERT_WEBHOOK_SECRET_FILE": str(tmp / "webhook-secret"),
        "OFFHOOK_ALERT_WEBHOOK_CA_FILE": str(certs.ca_cert),
        "OFFHOOK_PUBLIC_URL": PUBLIC_URL,
    }
    server = ProvisioningServer(tmp / "server", env=env)
    server.port = next(_PORTS)
    pair = SigningPair.make(tmp / "keys", "fleet-signing")
    (server.data_dir / "firmware-keyring.pem").write_bytes(pair.cert.read_bytes())
    server.start()
    upload(server, make_bundle(tmp / "bundles", pair, COMPATIBLE, "0.2.0")).raise_for_status()
    try:
        yield Rig(server, mailbox, hook)
    finally:
        server.stop()
        controller.stop()
        hook_server.shutdown()
        hook_server.server_close()


# --- a phone's reports --------------------------------------------------------------------------


def _mac() -> str:
    return "b8:27:eb:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _now(minutes_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def post(phone: DeviceCredential, route: str, body: dict[str, Any]) -> None:
    with phone.client() as client:
        reply = client.post(f"/api/v1/device/{route}", json=body)
        assert reply.status_code == 200, reply.text


def status(phone: DeviceCredential, *registered: bool, minutes_ago: float = 0) -> None:
    lines = [
        {"account": n, "user": f"20{n:02d}", "registered": ok, "status": 200 if ok else 403}
        for n, ok in enumerate(registered)
    ]
    post(
        phone,
        "status",
        {
            "id": secrets.token_hex(8),
            "time": _now(minutes_ago),
            "firmware_version": "0.1.0",
            "lines": lines,
            "firmware": {"compatible": COMPATIBLE, "state": "idle", "slot": "A"},
        },
    )


def event(phone: DeviceCredential, kind: str, **fields: Any) -> None:
    record = {"id": secrets.token_hex(8), "time": _now(), "type": kind, **fields}
    post(phone, "events", {"records": [record]})


def alerts_of(server: ProvisioningServer, subject_id: str, state: str = "all") -> list[Any]:
    reply = server.admin.get("/alerts", params={"state": state})
    reply.raise_for_status()
    return [a for a in reply.json()["alerts"] if a["subject"]["id"] == subject_id]


def alert_of(server: ProvisioningServer, subject_id: str, kind: str, state: str) -> Any:
    found = [a for a in alerts_of(server, subject_id) if a["kind"] == kind and a["state"] == state]
    return found[0] if len(found) == 1 else None


# --- tests --------------------------------------------------------------------------------------


def test_a_line_down_is_mailed_and_posted_then_resolves_when_the_phone_registers(
    rig: Rig,
) -> None:
    server = rig.server
    phone = server.enroll(_mac(), name="Reception desk")
    status(phone, True, False)
    alert = alert_of(server, phone.device_id, "line_unregistered", "open")
    assert alert is not None, alerts_of(server, phone.device_id)
    assert alert["severity"] == "warning"
    assert alert["message"] == "1 of 2 lines not registered: 2001 (SIP 403)"
    assert alert["subject"] == {
        "type": "device",
        "id": phone.device_id,
        "name": "Reception desk",
        "url": f"{PUBLIC_URL}/devices/{phone.device_id}",
    }

    posted = wait_until(
        lambda: rig.webhook.documents(phone.device_id), "the webhook's opened post", timeout=20
    )
    (opened,) = posted
    assert opened["event"] == "opened" and opened["alert"]["id"] == alert["id"]
    expected = (
        "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), opened["raw"], hashlib.sha256).hexdigest()
    )
    assert opened["headers"]["x-offhook-signature"] == expected
    assert opened["headers"]["content-type"] == "application/json"
    mails = wait_until(lambda: rig.mailbox.about(phone.device_id), "the opened mail", timeout=20)
    (mail,) = mails
    assert mail["Subject"] == "[offhook] WARNING: SIP line not registered - Reception desk"
    assert mail["To"] == "noc@example.test, oncall@example.test"
    assert "1 of 2 lines not registered" in _body(mail)
    assert f"{SMTP_USER} tls=True" in rig.mailbox.logins  # AUTH only after STARTTLS

    status(phone, False, False)  # worse: the same alert, no second notification
    again = alert_of(server, phone.device_id, "line_unregistered", "open")
    assert again["id"] == alert["id"] and again["severity"] == "critical"
    assert again["last_seen"] > alert["last_seen"] and again["first_seen"] == alert["first_seen"]

    status(phone, True, True)  # registered again: resolved by itself
    resolved = alert_of(server, phone.device_id, "line_unregistered", "resolved")
    assert resolved is not None and resolved["id"] == alert["id"]
    assert alert["id"] not in [a["id"] for a in server.admin.get("/alerts").json()["alerts"]]
    events = wait_until(
        lambda: [d["event"] for d in rig.webhook.documents(phone.device_id)][1:],
        "the webhook's resolved post",
        timeout=20,
    )
    assert events == ["resolved"]
    resolved_mail = wait_until(
        lambda: [m for m in rig.mailbox.about(phone.device_id) if "RESOLVED" in m["Subject"]],
        "the resolved mail",
        timeout=20,
    )
    assert len(resolved_mail) == 1

    def notifications() -> list[Any]:
        rows: list[Any] = server.admin.get(f"/alerts/{alert['id']}").json()["notifications"]
        return rows

    wait_until(
        lambda: all(n["status"] == "sent" for n in notifications()),
        "every notification marked sent",
        timeout=20,
    )
    final = notifications()
    assert sorted((n["channel"], n["event"]) for n in final) == [
        ("smtp", "opened"),
        ("smtp", "resolved"),
        ("webhook", "opened"),
        ("webhook", "resolved"),
    ]


def test_a_rejected_config_carries_the_phones_reason_until_one_is_applied(rig: Rig) -> None:
    server = rig.server
    phone = server.enroll(_mac(), name="Lobby")
    status(phone, True)
    event(phone, "config_rejected", config_revision=3, detail="accounts[0]: no tls transport")
    alert = alert_of(server, phone.device_id, "config_rejected", "open")
    assert alert["message"] == "revision 3 rejected by the phone: accounts[0]: no tls transport"
    event(phone, "config_rolled_back", config_revision=4, detail="registration failed: 403")
    same = alert_of(server, phone.device_id, "config_rejected", "open")
    assert same["id"] == alert["id"]
    assert same["message"] == "revision 4 rolled back by the phone: registration failed: 403"
    event(phone, "config_applied", config_revision=5)
    assert alert_of(server, phone.device_id, "config_rejected", "resolved")["id"] == alert["id"]


def test_the_sweep_finds_a_phone_not_seen_and_its_next_report_resolves_it(rig: Rig) -> None:
    server = rig.server
    phone = server.enroll(_mac(), name="Warehouse")
    status(phone, True, minutes_ago=50)  # its last report is 50 minutes old
    alert = wait_until(
        lambda: alert_of(server, phone.device_id, "not_seen", "open"),
        "the sweep's not_seen alert",
        timeout=20,
    )
    assert alert["severity"] == "critical"
    assert alert["message"] == "not seen for 50 min (threshold 30 min)"
    status(phone, True)  # it polls again
    assert alert_of(server, phone.device_id, "not_seen", "resolved")["id"] == alert["id"]
    time.sleep(2.5)  # two more sweeps: nothing opens again
    assert alert_of(server, phone.device_id, "not_seen", "open") is None


def test_poor_quality_of_a_group_and_its_recovery(rig: Rig) -> None:
    server = rig.server
    group = server.admin.post("/groups", json={"name": "Call centre"}).json()
    phones = [server.enroll(_mac(), group="Call centre") for _ in range(2)]

    def calls(phone: DeviceCredential, *scores: float) -> None:
        records = [
            {"id": secrets.token_hex(8), "time": _now(), "codec": "PCMU", "mos": mos}
            for mos in scores
        ]
        post(phone, "quality", {"records": records})

    calls(phones[0], 2.2, 2.9)
    assert alert_of(server, str(group["id"]), "poor_quality", "open") is None  # 2 calls only
    calls(phones[1], 2.5)
    alert = alert_of(server, str(group["id"]), "poor_quality", "open")
    assert alert["subject"]["name"] == "Call centre"
    assert alert["subject"]["url"] == f"{PUBLIC_URL}/groups/{group['id']}"
    assert alert["message"] == "mean MOS 2.53 over 3 recent calls (threshold 3.5)"
    calls(phones[1], 4.4, 4.4, 4.5, 4.4)
    assert alert_of(server, str(group["id"]), "poor_quality", "resolved")["id"] == alert["id"]


def test_a_rolled_back_update_and_the_rollout_that_paused_itself(rig: Rig) -> None:
    server = rig.server
    server.admin.post("/groups", json={"name": "Canaries"}).raise_for_status()
    phone = server.enroll(_mac(), group="Canaries", name="Canary 1")
    status(phone, True)
    rollout = server.admin.post(
        "/rollouts",
        json={
            "release": "0.2.0",
            "group": "Canaries",
            "stages": [100],
            "failure_threshold_pct": 10,
        },
    ).json()
    for step in ("downloading", "installed", "rebooting", "rolled_back"):
        event(
            phone,
            f"firmware_{step}",
            firmware_version="0.2.0",
            from_version="0.1.0",
            rollout=str(rollout["id"]),
            reason="not_registered" if step == "rolled_back" else "",
            detail="not registered within 120 s" if step == "rolled_back" else "",
        )
    alert = alert_of(server, phone.device_id, "firmware_failed", "open")
    assert alert["message"].startswith("firmware 0.2.0 update was rolled back: not_registered")
    paused = alert_of(server, str(rollout["id"]), "rollout_paused", "open")
    assert paused["severity"] == "critical"
    assert paused["subject"]["name"] == f"rollout {rollout['id']} of {COMPATIBLE} 0.2.0 to Canaries"
    assert "failure rate 100.0%" in paused["message"]

    server.admin.post(f"/rollouts/{rollout['id']}/abort").raise_for_status()
    wait_until(
        lambda: alert_of(server, str(rollout["id"]), "rollout_paused", "resolved"),
        "the sweep resolving the aborted rollout's alert",
        timeout=20,
    )
    status(phone, True)  # its next report: the failed target was taken away with the abort
    assert alert_of(server, phone.device_id, "firmware_failed", "resolved")["id"] == alert["id"]


def test_acknowledge_needs_an_operator_is_audited_and_the_cli_agrees(rig: Rig) -> None:
    server = rig.server
    phone = server.enroll(_mac(), name="Ack desk")
    status(phone, False)
    alert = alert_of(server, phone.device_id, "line_unregistered", "open")
    tokens = {}
    for role in ("read-only", "operator"):
        name = f"{role.replace('-', '')}{secrets.token_hex(3)}"
        made = server.fleet(
            "create-admin",
            name,
            "--role",
            role,
            "--password-stdin",
            "--api-token",
            input_text="alerts-password-1\n",
        )
        assert made.returncode == 0, made.stderr
        token = re.search(r"api token: (\S+)", made.stdout)
        assert token is not None
        tokens[role] = (name, token.group(1))
    reader = {"Authorization": f"Bearer {tokens['read-only'][1]}"}
    operator = {"Authorization": f"Bearer {tokens['operator'][1]}"}
    refused = server.admin.post(f"/alerts/{alert['id']}/ack", headers=reader)
    assert refused.status_code == 403, refused.text
    assert "alert.ack needs the operator role" in refused.json()["detail"]
    assert server.admin.get("/alerts", headers=reader).status_code == 200
    done = server.admin.post(f"/alerts/{alert['id']}/ack", headers=operator)
    assert done.json() == {"acknowledged": [alert["id"]], "skipped": []}
    acked = server.admin.get(f"/alerts/{alert['id']}").json()
    assert acked["state"] == "acknowledged"
    assert acked["acknowledged_by"] == f"admin:{tokens['operator'][0]}"
    audit = server.admin.get("/audit", params={"action": "alert.ack", "target_id": alert["id"]})
    assert [e["actor"] for e in audit.json()] == [f"admin:{tokens['operator'][0]}"]
    assert server.admin.post("/alerts/ack", json={"ids": [alert["id"], 10**6]}).status_code == 404
    assert server.admin.post("/alerts/ack", json={"ids": [2**40]}).status_code == 422
    assert server.admin.post(f"/alerts/{2**40}/ack").status_code == 422

    listed = server.fleet("alerts", "list", "--state", "acknowledged")
    assert listed.returncode == 0, listed.stderr
    assert f"acknowledged by admin:{tokens['operator'][0]}" in listed.stdout
    assert "Ack desk: no line registered: 2000 (SIP 403)" in listed.stdout

    other = server.enroll(_mac(), name="CLI desk")
    status(other, False)
    second = alert_of(server, other.device_id, "line_unregistered", "open")
    cli = server.fleet("alerts", "ack", str(second["id"]), str(alert["id"]))
    assert cli.returncode == 0, cli.stderr
    assert "Acknowledged 1 alert; 1 left as they were" in cli.stdout
    assert server.admin.get(f"/alerts/{second['id']}").json()["acknowledged_by"].startswith("cli:")
    as_json = json.loads(
        server.fleet("alerts", "list", "--json", "--kind", "line_unregistered").stdout
    )
    assert {a["id"] for a in as_json} >= {alert["id"], second["id"]}
    bad = server.fleet("alerts", "list", "--state", "closed")
    assert bad.returncode == 1 and "state 'closed'" in bad.stderr
    status(other, True)  # acknowledged alerts still resolve by themselves
    assert alert_of(server, other.device_id, "line_unregistered", "resolved")["id"] == second["id"]


def test_a_failing_webhook_is_retried_a_bounded_number_of_times_and_the_failure_shown(
    rig: Rig,
) -> None:
    server = rig.server
    phone = server.enroll(_mac(), name="Retry desk")
    rig.webhook.failing[phone.device_id] = 1  # one 500, then the retry goes through
    status(phone, False)
    alert = alert_of(server, phone.device_id, "line_unregistered", "open")

    def webhook_row() -> Any:
        rows = server.admin.get(f"/alerts/{alert['id']}").json()["notifications"]
        row = next(n for n in rows if n["channel"] == "webhook")
        return row if row["status"] in ("sent", "failed") else None

    row = wait_until(webhook_row, "the webhook notification delivered", timeout=20)
    assert (row["status"], row["attempts"], row["error"]) == ("sent", 2, "")
    assert len(rig.webhook.documents(phone.device_id)) == 2  # the 500 and the retry

    broken = server.enroll(_mac(), name="Broken hook")
    rig.webhook.failing[broken.device_id] = 10**6  # down for good, for this phone's alerts
    status(broken, False)
    failing = alert_of(server, broken.device_id, "line_unregistered", "open")

    def failed() -> Any:
        rows = server.admin.get(f"/alerts/{failing['id']}").json()["notifications"]
        hook = next(n for n in rows if n["channel"] == "webhook")
        return hook if hook["status"] == "failed" else None

    row = wait_until(failed, "the webhook notification failed", timeout=30)
    assert row["attempts"] == 3  # OFFHOOK_ALERT_NOTIFY_ATTEMPTS, default 3
    assert row["error"].endswith("/hooks/offhook answered 500")
    assert len(rig.webhook.documents(broken.device_id)) == 3
    counts = server.admin.get("/alerts").json()["counts"]
    assert counts["failed_notifications"] >= 1
    # the alert itself is unharmed, and mail still went out
    assert alert_of(server, broken.device_id, "line_unregistered", "open") is not None
    wait_until(lambda: rig.mailbox.about(broken.device_id), "the mail beside it", timeout=20)
    assert "alert notification failed" in server.log_text()


def test_bad_alert_settings_stop_the_start_naming_the_variable(tmp_path: Path) -> None:
    server = ProvisioningServer(
        tmp_path, env={"OFFHOOK_ALERT_WEBHOOK_URL": "http://hooks.example.test/x"}
    )
    server.port = next(_PORTS)
    with pytest.raises(Exception):  # noqa: B017 - the launcher's own start failure
        server.start()
    server.stop()
    assert "OFFHOOK_ALERT_WEBHOOK_URL" in server.log_text()


def test_the_alert_tasks_stop_cleanly_and_an_unsent_notification_waits_for_the_next_start(
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path / "tls")
    hook, hook_server = _webhook_server(certs, next(_PORTS))
    env = {
        "OFFHOOK_ALERT_SWEEP_INTERVAL_S": "1",
        "OFFHOOK_ALERT_RETRY_DELAY_S": "60",  # the sender is waiting to retry when it stops
        "OFFHOOK_ALERT_WEBHOOK_URL": f"https://127.0.0.1:{hook.port}/hook",
        "OFFHOOK_ALERT_WEBHOOK_CA_FILE": str(certs.ca_cert),
    }
    server = ProvisioningServer(tmp_path / "server", env=env)
    server.port = next(_PORTS)
    server.start()
    try:
        wait_until(lambda: "alert tasks started" in server.log_text(), "the alert tasks")
        phone = server.enroll(_mac())
        hook.failing[phone.device_id] = 10**6
        status(phone, False)
        wait_until(lambda: hook.documents(phone.device_id), "the first, refused attempt")
    finally:
        started = time.monotonic()
        server.stop()
        hook_server.shutdown()
        hook_server.server_close()
    assert time.monotonic() - started < 10  # not the 60 s retry delay
    log = server.log_text()
    assert "alert tasks stopped" in log and "Application shutdown complete" in log
    assert "alert sweep failed" not in log and "alert sender failed" not in log
    with sqlite3.connect(server.data_dir / "provisioning.db") as db:
        rows = db.execute("select status, claimed_at from alert_notifications").fetchall()
    assert rows == [("pending", None)]  # neither lost nor marked failed
