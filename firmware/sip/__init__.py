"""The phone's SIP engine: pjsua2 driven from one owner thread (see docs/sip.md)."""

from offhook.firmware.ports import AudioEndpoint
from offhook.firmware.sip.engine import SipEngine, SipEngineError

__all__ = ["AudioEndpoint", "SipEngine", "SipEngineError"]
