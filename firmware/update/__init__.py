"""Firmware updates on the phone: RAUC A/B slots driven by the server's ``[firmware]`` config
(docs/updates.md). ``agent.py`` decides, ``service.py`` runs it, the adapters talk to RAUC
(``rauc_cli.py``) and download bundles (``download.py``)."""
