"""Alert notifications: mail over SMTP and an HTTPS webhook, delivered from the outbox.

Opening or resolving an alert writes one ``alert_notifications`` row per configured channel
in the alert's transaction (``provisioning.alert_engine``). ``deliver_pending`` runs on the
server's sender task, never on a request: it claims a row (a conditional UPDATE, so two
server processes never send the same row at once), sends it with up to
``OFFHOOK_ALERT_NOTIFY_ATTEMPTS`` attempts (``retry_delay_s``, doubling), and records
``sent`` or ``failed`` with the error, which the Alerts page and the REST API show. No
database transaction is held while a mail server or webhook is talked to.

Webhook: ``POST`` of the JSON below with ``Content-Type: application/json`` and, with a
secret, ``X-Offhook-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``; any
2xx is delivered. Mail: a plain-text message to every recipient; STARTTLS or SSL verify the
server's certificate (the system's CAs, or ``OFFHOOK_ALERT_SMTP_CA_FILE``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import or_, select, update

from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.provisioning.alert_rules import KINDS, Subject
from offhook.provisioning.alert_settings import AlertSettings, SmtpChannel, WebhookChannel
from offhook.provisioning.db import Database, rowcount
from offhook.provisioning.models import Alert, AlertNotification, utcnow

log = logging.getLogger(__name__)

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SIGNATURE_HEADER = "X-Offhook-Signature"
# A claim older than this belongs to a process that died mid-send: another may take it over.
CLAIM_EXPIRES = timedelta(minutes=10)
BATCH = 50  # notifications claimed per round


class DeliveryError(OffhookError, RuntimeError):
    """A channel refused or could not take a notification; the message says what happened."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def alert_url(public_url: str, path: str) -> str:
    return (public_url + path) if public_url else path


def alert_document(alert: Alert, public_url: str) -> dict[str, Any]:
    """The alert as the webhook posts it and the REST API answers it."""
    subject = Subject(alert.subject_type, alert.subject_id, alert.subject_name)
    return {
        "id": alert.id,
        "kind": alert.kind,
        "kind_text": KINDS.get(alert.kind, alert.kind),
        "severity": alert.severity,
        "state": alert.state,
        "subject": {
            "type": alert.subject_type,
            "id": alert.subject_id,
            "name": alert.subject_name,
            "url": alert_url(public_url, subject.path),
        },
        "message": alert.message,
        "first_seen": _iso(alert.first_seen),
        "last_seen": _iso(alert.last_seen),
        "resolved_at": _iso(alert.resolved_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": _iso(alert.acknowledged_at),
        "url": alert_url(public_url, f"/alerts?state=all&id={alert.id}"),
    }


def webhook_body(event: str, document: dict[str, Any]) -> bytes:
    return json.dumps({"event": event, "alert": document}, sort_keys=True).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _tls_context(ca_file: object) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def post_webhook(channel: WebhookChannel, body: bytes) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "offhook-provisioning"}
    if channel.secret:
        headers[SIGNATURE_HEADER] = signature(channel.secret, body)
    try:
        reply = httpx.post(
            channel.url,
            content=body,
            headers=headers,
            timeout=channel.timeout_s,
            verify=_tls_context(channel.ca_file),
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"webhook {channel.url}: {type(exc).__name__}: {exc}") from None
    if not 200 <= reply.status_code < 300:
        raise DeliveryError(f"webhook {channel.url} answered {reply.status_code}")


def mail_message(channel: SmtpChannel, event: str, document: dict[str, Any]) -> EmailMessage:
    subject = document["subject"]
    state = "RESOLVED" if event == "resolved" else document["severity"].upper()
    message = EmailMessage()
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message["Subject"] = f"[offhook] {state}: {document['kind_text']} - {subject['name']}"
    lines = [
        f"Alert {document['id']} {'resolved' if event == 'resolved' else 'opened'}.",
        "",
        f"What:     {document['kind_text']} ({document['kind']}, {document['severity']})",
        f"Subject:  {subject['type']} {subject['name']}  {subject['url']}",
        f"Message:  {document['message']}",
        f"First seen: {document['first_seen']}",
        f"Last seen:  {document['last_seen']}",
    ]
    if document["resolved_at"]:
        lines.append(f"Resolved:   {document['resolved_at']}")
    lines += ["", f"Alerts page: {document['url']}"]
    message.set_content("\n".join(lines) + "\n")
    return message


def send_mail(channel: SmtpChannel, message: EmailMessage) -> None:
    context = _tls_context(channel.ca_file)
    try:
        smtp: smtplib.SMTP
        if channel.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                channel.host, channel.port, timeout=channel.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s)
        with smtp:
            if channel.security == "starttls":
                smtp.starttls(context=context)
            if channel.username:
                smtp.login(channel.username, channel.password)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(
            f"mail via {channel.host}:{channel.port}: {type(exc).__name__}: {exc}"
        ) from None


def send(settings: AlertSettings, channel: str, event: str, document: dict[str, Any]) -> None:
    if channel == "webhook" and settings.webhook is not None:
        post_webhook(settings.webhook, webhook_body(event, document))
    elif channel == "smtp" and settings.smtp is not None:
        send_mail(settings.smtp, mail_message(settings.smtp, event, document))
    else:
        raise DeliveryError(f"channel {channel} is not configured any more")


def _claim(database: Database, limit: int) -> list[int]:
    """Notifications this process may send now: pending ones, and claims that expired."""
    now = utcnow()
    with database.session() as db:
        candidates = list(
            db.scalars(
                select(AlertNotification.id)
                .where(
                    or_(
                        AlertNotification.status == PENDING,
                        (AlertNotification.status == SENDING)
                        & (AlertNotification.claimed_at < now - CLAIM_EXPIRES),
                    )
                )
                .order_by(AlertNotification.id)
                .limit(limit)
            )
        )
        claimed = []
        for notification_id in candidates:
            result = db.execute(
                update(AlertNotification)
                .where(
                    AlertNotification.id == notification_id,
                    or_(
                        AlertNotification.status == PENDING,
                        (AlertNotification.status == SENDING)
                        & (AlertNotification.claimed_at < now - CLAIM_EXPIRES),
                    ),
                )
                .values(status=SENDING, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
            if rowcount(result) == 1:
                claimed.append(notification_id)
    return claimed


def _load(
    database: Database, notification_id: int, public_url: str
) -> tuple[str, str, dict[str, Any]] | None:
    with database.session() as db:
        notification = db.get(AlertNotification, notification_id)
        if notification is None:
            return None  # the alert was deleted with its phone's data
        return (
            notification.channel,
            notification.event,
            alert_document(notification.alert, public_url),
        )


def _finish(database: Database, notification_id: int, attempts: int, error: str) -> None:
    with database.session() as db:
        notification = db.get(AlertNotification, notification_id)
        if notification is None:
            return
        notification.attempts += attempts
        notification.status = FAILED if error else SENT
        notification.error = error[:4000]
        notification.sent_at = None if error else utcnow()


def deliver_one(
    database: Database,
    settings: AlertSettings,
    public_url: str,
    notification_id: int,
    stop: threading.Event,
    sender: Callable[[AlertSettings, str, str, dict[str, Any]], None] = send,
) -> bool:
    loaded = _load(database, notification_id, public_url)
    if loaded is None:
        return False
    channel, event, document = loaded
    error = ""
    attempts = 0
    delay = settings.retry_delay_s
    while attempts < settings.notify_attempts:
        attempts += 1
        try:
            sender(settings, channel, event, document)
            error = ""
            break
        except DeliveryError as exc:
            error = str(exc)
            log.warning(
                "alert notification attempt failed",
                extra=kv(
                    notification=notification_id,
                    alert=document["id"],
                    channel=channel,
                    attempt=attempts,
                    error=error,
                ),
            )
        if attempts < settings.notify_attempts and stop.wait(delay):
            # Shutting down between attempts: back to pending, the next start tries again.
            _release(database, [notification_id])
            return False
        delay *= 2
    _finish(database, notification_id, attempts, error)
    if error:
        log.error(
            "alert notification failed",
            extra=kv(
                notification=notification_id,
                alert=document["id"],
                channel=channel,
                event=event,
                attempts=attempts,
                error=error,
            ),
        )
        return False
    log.info(
        "alert notification sent",
        extra=kv(notification=notification_id, alert=document["id"], channel=channel, event=event),
    )
    return True


def deliver_pending(
    database: Database,
    settings: AlertSettings,
    public_url: str,
    stop: threading.Event,
    sender: Callable[[AlertSettings, str, str, dict[str, Any]], None] = send,
) -> dict[str, int]:
    """Send what is waiting, a batch at a time, until nothing is or ``stop`` is set."""
    counts = {"sent": 0, "failed": 0}
    while not stop.is_set():
        claimed = _claim(database, BATCH)
        if not claimed:
            break
        for done, notification_id in enumerate(claimed):
            if stop.is_set():
                _release(database, claimed[done:])
                break
            ok = deliver_one(database, settings, public_url, notification_id, stop, sender)
            counts["sent" if ok else "failed"] += 1
    return counts


def _release(database: Database, notification_ids: list[int]) -> None:
    """Claims not sent because the server is stopping go back to pending for the next start."""
    with database.session() as db:
        db.execute(
            update(AlertNotification)
            .where(AlertNotification.id.in_(notification_ids), AlertNotification.status == SENDING)
            .values(status=PENDING, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
