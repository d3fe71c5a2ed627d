"""TLS on the room's own port, in memory: the transport keeps its non-blocking raw socket.

The fan-out writes to every member without waiting, so TLS cannot be a stream that awaits: an
`ssl.SSLObject` over two memory BIOs encrypts what the transport is given and decrypts what it
reads, and the transport moves the ciphertext exactly as it moves plain bytes. A connection is
TLS when its first byte opens a ClientHello (0x16, a handshake record); inside, the same
dialects as outside (JSON frames, plain text, HTTP and WebSocket).
"""

from __future__ import annotations

import contextlib
import ssl

# RFC 8446 section 5.1: a TLS record of type handshake(22) opens every ClientHello.
HANDSHAKE_RECORD = 0x16
# TLS 1.2 is the oldest anything current still speaks; older versions are broken.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def looks_like_tls(data: bytes) -> bool:
    return bool(data) and data[0] == HANDSHAKE_RECORD


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for the room's certificate. Raises OSError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(cert_file, key_file)
    # An HTTP/1.1 client (a browser) and the others (no ALPN) are both welcome.
    context.set_alpn_protocols(["http/1.1"])
    return context


class TlsLayer:
    """One connection's TLS state: plaintext in and out, ciphertext for the socket."""

    __slots__ = ("_incoming", "_outgoing", "_tls", "handshaken")

    def __init__(self, context: ssl.SSLContext, first: bytes) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._incoming.write(first)
        self.handshaken = False

    def feed(self, ciphertext: bytes) -> None:
        """Bytes read from the socket; `b""` means the peer closed it."""
        if ciphertext:
            self._incoming.write(ciphertext)
        else:
            self._incoming.write_eof()

    def handshake(self) -> bool:
        """Advance the handshake; True once done. Raises ssl.SSLError."""
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.handshaken = True
        return True

    def encrypt(self, plaintext: bytes | bytearray) -> bytes:
        """The ciphertext that carries `plaintext` (and anything TLS itself had to say)."""
        view = memoryview(plaintext)
        while view:
            written = self._tls.write(view)
            view = view[written:]
        return self._outgoing.read()

    def decrypt(self, max_bytes: int) -> bytes | None:
        """Plaintext ready now, `b""` once the peer closed, None if more ciphertext is needed.

        Raises ssl.SSLError for a broken record.
        """
        try:
            return self._tls.read(max_bytes)
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLZeroReturnError:
            return b""
        except ssl.SSLEOFError:
            return b""  # closed without a close_notify: for us the same

    def close_notify(self) -> bytes:
        """The alert that ends the TLS session cleanly (so the peer can tell it from a cut)."""
        # The peer's own close_notify is not awaited (SSLWantReadError): we are closing anyway.
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()
        return self._outgoing.read()

    def pending_output(self) -> bytes:
        """Ciphertext TLS produced on its own (handshake answers, session tickets)."""
        return self._outgoing.read()
