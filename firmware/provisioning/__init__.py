"""The phone's provisioning client: enrollment, pinned TLS, config pull/apply/rollback, outbox.

``ProvisioningClient`` is the one object the runtime uses; ``effective_config`` merges a
provisioned config with the phone's local-only sections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offhook.firmware.provisioning.identity import DeviceIdentity

if TYPE_CHECKING:
    from offhook.firmware.provisioning.client import ProvisioningClient, effective_config

__all__ = ["DeviceIdentity", "ProvisioningClient", "effective_config"]
_CLIENT_NAMES = ("ProvisioningClient", "effective_config")


def __getattr__(name: str) -> object:
    """The client (HTTP, the config store, the check-sync listener) loads when first named:
    the identity and the update agent use this package too, on phones that have no
    provisioning server and never run the client."""
    if name in _CLIENT_NAMES:
        import offhook.firmware.provisioning.client as client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
