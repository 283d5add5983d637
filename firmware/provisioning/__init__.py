"""The phone's provisioning client: enrollment, pinned TLS, config pull/apply/rollback, outbox.

``ProvisioningClient`` is the one object the runtime uses; ``effective_config`` merges a
provisioned config with the phone's local-only sections.
"""

from offhook.firmware.provisioning.client import ProvisioningClient, effective_config
from offhook.firmware.provisioning.identity import DeviceIdentity

__all__ = ["DeviceIdentity", "ProvisioningClient", "effective_config"]
