"""One accepted connection's socket, sent to without waiting and read by one task.

The fan-out writes to many members from one task, so a send must never wait: `send_nowait`
gives the kernel what it takes at once and keeps the rest, and the connection's own task
(`drain`) waits for room in the socket only while there is a rest. A member that reads along,
which is nearly all of them, therefore costs one system call per write and no task switch;
a waiting writer task per member cost three switches per delivery and a few KiB each.

Only this module touches the socket: it uses trio's low-level readiness waits on a plain
non-blocking socket, as trio's own socket layer does.
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Callable

import trio

from .tls import TlsLayer

# Large enough to take a burst of frames in one call; the buffer lives only until parsed.
RECEIVE_BYTES = 16 * 1024
# What a lingering close reads and discards: what was in flight, not a stream that goes on.
LINGER_BYTES = 64 * 1024
# A peer that takes longer than this to take its last frames is not going to.
LINGER_SECONDS = 5.0
# How often a closing connection looks whether the peer has acknowledged everything.
LINGER_POLL_SECONDS = 0.05
# A batch of writes (`SendBatch`) goes out once it holds this much: a flush of one message to
# a room fits many times over, and one of join notices to 5,000 members (20 KB each) does not
# keep 100 MB of its members' shares alive at once (the kernel's socket buffers: 16 KiB each).
SEND_BATCH_BYTES = 256 * 1024


def unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on `sock` that the peer has not acknowledged (0 where the system cannot say)."""
    if sys.platform != "linux":
        return 0
    import fcntl
    import termios

    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)  # SIOCOUTQ
    except (OSError, ValueError):  # ValueError: the socket is already closed
        return 0
    return int.from_bytes(queued, sys.byteorder, signed=True)


class Transport:
    """A connected socket: `send_nowait` never blocks, `receive_some` is the one reader."""

    __slots__ = ("blocked_since", "broken", "pending", "sock", "tls")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle's algorithm holds a small write until the last one is acknowledged: the
            # 31 ms p99 of the C and C++ chat servers the benchmark compares against.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.pending = bytearray()  # taken for sending, not yet taken by the kernel
        self.blocked_since: float | None = None  # since when the kernel has refused more
        self.broken = False  # the peer is gone: sends are discarded
        self.tls: TlsLayer | None = None  # set once the peer opened with a TLS ClientHello

    @classmethod
    def from_stream(cls, stream: trio.SocketStream) -> Transport:
        """Take over the socket of an accepted `stream` (which is unusable afterwards)."""
        trio_sock = stream.socket
        family, kind, proto = trio_sock.family, trio_sock.type, trio_sock.proto
        return cls(socket.socket(family, kind, proto, fileno=trio_sock.detach()))

    @property
    def blocked(self) -> bool:
        """Whether bytes are waiting for the kernel: more must queue behind them."""
        return bool(self.pending)

    def send_nowait(self, data: bytes | bytearray) -> bool:
        """Send `data` after anything pending; False if some must wait (see `drain`)."""
        if self.broken:
            return True
        if self.tls is not None:
            data = self.tls.encrypt(data)
            if not data:
                return not self.pending
        if self.pending:
            self.pending += data
            return False
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # reset, broken pipe: the peer is gone
            self.broken = True
            return True
        if sent < len(data):
            self.pending += memoryview(data)[sent:]
            self.blocked_since = trio.current_time()
            return False
        return True

    async def drain(self) -> None:
        """Wait until the kernel has taken everything pending. Raises BrokenResourceError."""
        while self.pending and not self.broken:
            await trio.lowlevel.wait_writable(self.sock)
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                sent = 0
            except OSError:  # reset, broken pipe: the peer is gone
                self.broken = True
                break
            del self.pending[:sent]
        self.blocked_since = None
        if self.broken:
            self.pending.clear()
            raise trio.BrokenResourceError("the peer closed the connection")

    def receive_nowait(self, max_bytes: int = RECEIVE_BYTES) -> bytes | None:
        """What the peer has sent, b"" once it has closed, or None if nothing has come yet.

        Raises BrokenResourceError.
        """
        if self.tls is not None:
            return self._receive_tls_nowait(max_bytes)
        try:
            return self.sock.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:  # reset, broken pipe: the peer is gone
            self.broken = True
            raise trio.BrokenResourceError(str(exc)) from None

    def _receive_tls_nowait(self, max_bytes: int) -> bytes | None:
        tls = self.tls
        assert tls is not None
        try:
            while (plaintext := tls.decrypt(max_bytes)) is None:
                try:
                    ciphertext = self.sock.recv(max_bytes)
                except BlockingIOError:
                    return None
                tls.feed(ciphertext)
        except ssl.SSLError as exc:
            self.broken = True
            raise trio.BrokenResourceError(f"TLS: {exc.reason or exc}") from None
        except OSError as exc:
            self.broken = True
            raise trio.BrokenResourceError(str(exc)) from None
        finally:
            extra = tls.pending_output()  # a key update or a session ticket
            if extra and not self.broken:
                self._send_raw_nowait(extra)
        return plaintext

    async def start_tls(self, layer: TlsLayer) -> None:
        """Complete the TLS handshake the peer began; then every byte goes through `layer`.

        Raises BrokenResourceError if the peer breaks it off or speaks broken TLS; the
        caller's deadline bounds it.
        """
        try:
            while not layer.handshake():
                self._send_raw_nowait(layer.pending_output())
                await self.drain()
                await trio.lowlevel.wait_readable(self.sock)
                try:
                    layer.feed(self.sock.recv(RECEIVE_BYTES))
                except BlockingIOError:
                    continue
        except ssl.SSLError as exc:
            self.broken = True
            raise trio.BrokenResourceError(f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            self.broken = True
            raise trio.BrokenResourceError(str(exc)) from None
        self._send_raw_nowait(layer.pending_output())
        self.tls = layer

    def _send_raw_nowait(self, data: bytes) -> None:
        """Ciphertext TLS itself produced: queued like anything else, never encrypted again."""
        if not data:
            return
        tls, self.tls = self.tls, None
        try:
            self.send_nowait(data)
        finally:
            self.tls = tls

    async def receive_some(self, max_bytes: int = RECEIVE_BYTES) -> bytes:
        """The next bytes from the peer; b"" once it has closed. Raises BrokenResourceError."""
        waited = False
        while (data := self.receive_nowait(max_bytes)) is None:
            await trio.lowlevel.wait_readable(self.sock)
            waited = True
        if not waited:
            # Data was already there: still let other connections have their turn.
            await trio.lowlevel.checkpoint()
        return data

    async def linger_close(self) -> None:
        """Close our side, then wait (bounded) until the peer has everything we sent.

        Closing a socket with unread input resets the connection, and the kernel throws away
        whatever it has not delivered yet: the last messages, and the notice of why we closed.
        So we shut our side first, then read and discard what still comes in until the peer
        closes too or has acknowledged every byte (Apache's lingering close does the same).
        """
        if self.broken:
            return
        discarded = 0
        with trio.move_on_after(LINGER_SECONDS):
            try:
                if self.tls is not None:
                    self._send_raw_nowait(self.tls.close_notify())
                    await self.drain()
                self.sock.shutdown(socket.SHUT_WR)
                while discarded <= LINGER_BYTES and unacknowledged(self.sock):
                    with trio.move_on_after(LINGER_POLL_SECONDS):
                        data = await self.receive_some()
                        if not data:
                            return
                        discarded += len(data)
            except (trio.BrokenResourceError, OSError):
                pass

    def close(self) -> None:
        """Close the socket now (waking nothing: the connection's one task is the caller)."""
        self.broken = True
        self.pending.clear()
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class SendBatch:
    """Writes to many connections, gathered and then made back to back by `send_nowait`.

    The fan-out's flush is one write per member. Made as it goes, each write follows the work
    of taking that member's share of the log, and on the test VM a `send` then cost 23 µs
    against 14 µs when the sends follow one another (the receivers' CPUs have gone idle in
    between and must be woken again). So the flush takes every member's share first, then
    sends them all, then does each one's bookkeeping.
    """

    __slots__ = ("_bytes", "_sends")

    def __init__(self) -> None:
        self._sends: list[tuple[Transport, bytes, Callable[[bool], None]]] = []
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._sends)

    def add(self, transport: Transport, data: bytes, done: Callable[[bool], None]) -> None:
        """Write `data` to `transport` with the others; then `done(as send_nowait returned)`.

        Once SEND_BATCH_BYTES are gathered, they are sent at once."""
        self._sends.append((transport, data, done))
        self._bytes += len(data)
        if self._bytes >= SEND_BATCH_BYTES:
            self.send_nowait()

    def send_nowait(self) -> None:
        """Make every write gathered so far, then call each one's `done`."""
        sends, self._sends = self._sends, []
        self._bytes = 0
        taken = [transport.send_nowait(data) for transport, data, _ in sends]
        for (_, _, done), result in zip(sends, taken, strict=True):
            done(result)
