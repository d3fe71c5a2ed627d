"""The terminal client: addresses, logging in, the connection that survives trouble, the TUI
and pipe mode. Builds on `multichat.protocol` only; `connect.py` is the entry point.
"""
