"""The phone's SIP engine: pjsua2 driven from one owner thread (see docs/sip.md)."""

from firmware.ports import AudioEndpoint
from firmware.sip.engine import SipEngine, SipEngineError

__all__ = ["AudioEndpoint", "SipEngine", "SipEngineError"]
