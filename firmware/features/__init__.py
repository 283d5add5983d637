"""Desk-phone features beside the call core: the directory search, the settings menu and the
server trust prompt; BLF keys, text messages and action URLs.

Each module is pure (no I/O, no clock), like the Phone that uses it.
"""
