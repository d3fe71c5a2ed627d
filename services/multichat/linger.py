"""A lingering close: shut a connection without throwing away what we last sent.

Closing a socket with unread input resets the connection, and the kernel throws away whatever
it has not delivered yet: the last messages, and the notice of why we closed. So we close our
side first, then read and discard what still comes in until the peer closes too or has
acknowledged every byte, bounded in bytes and time (Apache's lingering close does the same).
"""

from __future__ import annotations

import sys

import trio

# What was in flight when we closed, not a stream that goes on.
LINGER_BYTES = 64 * 1024
# A peer that takes longer than this to take its last frames is not going to.
LINGER_SECONDS = 5.0
# How often a closing connection looks whether the peer has acknowledged everything.
LINGER_POLL_SECONDS = 0.05
RECEIVE_BYTES = 16 * 1024


def unacknowledged(sock: trio.socket.SocketType) -> int:
    """Bytes sent on `sock` that the peer has not acknowledged (0 where the system cannot say)."""
    if sys.platform != "linux":
        return 0
    import fcntl
    import termios

    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)  # SIOCOUTQ
    except OSError:
        return 0
    return int.from_bytes(queued, sys.byteorder, signed=True)


async def linger_close(stream: trio.abc.Stream) -> None:
    """Close our side of `stream`, then wait (bounded) until the peer has everything we sent.

    The caller closes the socket afterwards.
    """
    if not isinstance(stream, trio.SocketStream):
        return
    discarded = 0
    with trio.move_on_after(LINGER_SECONDS):
        try:
            await stream.send_eof()
            while discarded <= LINGER_BYTES and unacknowledged(stream.socket):
                with trio.move_on_after(LINGER_POLL_SECONDS):
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        return
                    discarded += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
