# ruff: noqa: E501  (a data table: one line per key reads best unwrapped)
"""What each setting the server may set means, for the settings editor: taken from the
key tables of docs/config.md (the reference), keyed by dotted name. Types, allowed values,
ranges and defaults come from the schema itself (offhook.contract.config), not from here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "action_urls.answered": "when a call (either direction) connects",
        "action_urls.ended": "when a call ends that is not a missed one (answered, busy, failed, no answer)",
        "action_urls.incoming": "fetched when a call is offered (before it rings, DND or forwarding decide)",
        "action_urls.missed": "when an incoming call ends unanswered here (given up, declined, DND, busy, forwarded)",
        "action_urls.registered": "when a line registers after it was not registered",
        "action_urls.retries": "more attempts after a failure (connection error, timeout, 5xx); 0-5",
        "action_urls.timeout_s": "per attempt (0-30 s)",
        "admin.pin": "4-12 digits that open the phone's settings menu and approve a discovered server; empty: the settings menu stays locked (a secret: redacted in logs)",
        "audio.mixer_control": "ALSA mixer control for speaker volume (empty: software gain)",
        "audio.period_ms": "ALSA period, 5-40 ms (smaller: faster tones, more wake-ups)",
        "audio.ring_volume": "0-100; the user's volume keys override and persist",
        "audio.sample_rate": "8000, 16000 or 48000 Hz (the SIP engine's clock runs at the same rate)",
        "audio.speaker_volume": "0-100; the user's volume keys override and persist",
        "audio.tone_plan": "us (North America), eu (ETSI 425 Hz), uk",
        "board.display": "ssd1306, sh1106 or none",
        "board.display_address": "I2C address",
        "board.display_bus": "i2c or spi",
        "board.display_rotate": "0-3 quarter turns",
        "device.language": "reserved for screen texts",
        "device.name": "shown in the status menu and reported to the server",
        "device.timezone": "IANA zone for the idle clock and history (unknown names fall back to UTC with a warning)",
        "dialplan.digit_map": "when a number is complete; see below",
        "dialplan.emergency_numbers": "sent at once, whatever else is configured",
        "dialplan.interdigit_timeout_s": "the T timer",
        "dialplan.offhook_timeout_s": "off-hook without dialling this long: howler tone",
        "directory.base_dn": "where people are searched (required with url)",
        "directory.bind_dn": "the phones' reader account (empty: anonymous bind)",
        "directory.bind_password": "its password (a secret: redacted in logs)",
        "directory.display_attribute": "the name shown",
        "directory.lookup_incoming": "name callers who sent no name and are not in [[phonebook]]",
        "directory.max_results": "1-200",
        "directory.name_attributes": "attributes a typed name is a prefix of",
        "directory.number_attributes": "attributes holding numbers; one result row each",
        "directory.timeout_s": "connect and answer timeout per query (whole seconds on the socket, rounded up)",
        "directory.url": "ldap://host[:port] or ldaps://host[:port]; empty: no directory",
        "features.auto_answer": "answer incoming calls hands-free",
        "features.call_waiting": "a second call while talking beeps instead of being rejected busy",
        "features.dnd": "do not disturb at start (the DND key toggles it)",
        "features.forward_always": "forwarding targets (302 redirect)",
        "features.forward_busy": "forwarding targets (302 redirect)",
        "features.forward_no_answer": "forwarding targets (302 redirect)",
        "features.forward_no_answer_s": "ring time before forwarding on no answer, 5-120 s",
        "features.ring_timeout_s": "an incoming call nobody answers (and the caller never cancels) is refused with 480 after this, 5-600 s; keep it above forward_no_answer_s when that forwarding is set (the first timer to run out wins)",
        "firmware.maintenance_window": 'HH:MM-HH:MM in device.timezone (may wrap midnight) when the phone may reboot into a new slot; "": as soon as it is idle',
        "firmware.rollout": "optional rollout id echoed in the phone's update reports",
        "firmware.sha256": "optional SHA-256 of the bundle file, checked after download",
        "firmware.size": "optional bundle size in bytes (0: unknown)",
        "firmware.url": "the bundle: https://... (http:// for tests) or a path starting with / relative to provisioning.url; required with version",
        "firmware.version": 'target firmware version (a RAUC bundle\'s version); "": no update wanted',
        "logging.level": "debug, info, warning or error",
        "sip.codecs": "enabled codecs, first preferred; any of G722, PCMU, PCMA, GSM, iLBC, speex, L16",
        "sip.port": "UDP/TCP listening port; TLS listens on port + 1; 0 picks free ports; local on a simulator",
        "sip.tls_verify_server": "refuse a TLS registrar whose certificate does not verify",
        "sip.user_agent": "User-Agent header",
    }
)
