"""The room and what serves it on trio: listeners, sessions, fan-out, delivery and limits.

Builds on `multichat.protocol` only; `ChatServer` (listeners.py) is the entry point.
"""
