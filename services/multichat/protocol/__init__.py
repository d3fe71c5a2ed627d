"""multichat/1, sans-I/O: events, the wire codec, the state table and the connection objects.

Nothing in this wing does I/O or imports trio: it turns bytes into events and events into
bytes, so it can be tested byte by byte and reused by any client. The other wings build on it.
"""
