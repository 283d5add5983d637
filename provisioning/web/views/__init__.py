"""Web UI pages, one module per area."""
