"""Import path named in the architecture; the code lives in the firmware.provisioning package."""

from offhook.firmware.provisioning import DeviceIdentity, ProvisioningClient, effective_config

__all__ = ["DeviceIdentity", "ProvisioningClient", "effective_config"]
