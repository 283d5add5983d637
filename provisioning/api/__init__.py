"""HTTP APIs: device (phones, per docs/provisioning-protocol.md) and admin (REST, OpenAPI)."""
