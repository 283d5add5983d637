"""The network part of the phone's status report: its link and its round trip to the registrar.

Cheap to measure, and what a helpdesk asks first about a phone with bad calls: is it on Wi-Fi
with a weak signal, on a 10 Mbit/s half-duplex port, or far from its registrar? The link is
read from sysfs and procfs for the interface holding the phone's address towards the server
(``firmware/netinfo.py``), the round trip is one OPTIONS (``firmware/sip/options_ping.py``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from offhook.contract.config import PhoneConfig
from offhook.firmware.netinfo import interface_with_address, link_info
from offhook.firmware.sip.options_ping import options_rtt_ms, registrar_address


def network_status(config: PhoneConfig, local_ip: str) -> dict[str, Any]:
    """``interface``, ``kind`` (ethernet/wifi), ``speed_mbps``, ``duplex``, ``signal_dbm``,
    ``link_quality``, ``registrar_rtt_ms`` (None for what could not be measured)."""
    report: dict[str, Any] = asdict(link_info(interface_with_address(local_ip)))
    registrar = registrar_address(config)
    report["registrar_rtt_ms"] = options_rtt_ms(*registrar) if registrar else None
    return report
