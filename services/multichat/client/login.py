"""Reaching a room and logging in: one connection, one hello, one answer.

The connection is TCP, or a WebSocket over TCP or TLS (`websocket.py`), or, for an invite
(`multichat://...&fp=SHA256`), TLS whose certificate must have the invite's fingerprint, checked
before a byte of ours is sent, so a room that is not the one invited to never sees the password
(`IdentityChanged`). Either way what comes back is a stream of JSON lines, and the rest of the
client cannot tell which. Every way this can fail becomes one of three errors, each worded as
one line for the person who typed the address: `ConnectFailed` (refused, unknown host, timed
out, unreachable, an untrusted certificate or the wrong one, a room that is closed behind its
tunnel), `NotMultichat` (something answered, but not a multichat server: an SSH or web server,
or silence) and `LoginRefused` (the room said no, with the server's error code).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import socket
import ssl

import trio

from ..protocol.connection import ClientConnection
from ..protocol.errors import RemoteProtocolError
from ..protocol.events import ConnectionClosed, Error, Hello, NeedData, Shutdown, Welcome
from .address import Address
from .websocket import UpgradeRefused, WebSocketError, open_websocket

# DNS and a TCP handshake, through ngrok's edge too, take well under a second when they work.
CONNECT_SECONDS = 10.0
# A multichat server answers a hello at once; silence means something else is listening.
HANDSHAKE_SECONDS = 10.0
# Large enough for a welcome naming everyone in a big room, and the history after it.
RECEIVE_BYTES = 64 * 1024
# ngrok's answers for a free-plan https:// address whose room is not there
# (https://ngrok.com/docs/errors/): no agent online for the address, and an agent online whose
# room does not answer it.
NGROK_ENDPOINT_OFFLINE = "ERR_NGROK_3200"
NGROK_UPSTREAM_DOWN = "ERR_NGROK_8012"


class ClientError(Exception):
    """Why the client cannot connect, as one line for a person."""


class ConnectFailed(ClientError):
    """No connection: refused, unknown host, timed out, network unreachable."""


class NotMultichat(ClientError):
    """Something answered, but not a multichat server."""


class IdentityChanged(ConnectFailed):
    """The room's certificate is not the one its invite pins; nothing was sent to it."""


class LoginRefused(ClientError):
    """The room said no; `code` is the server's error code (`bad_password`, `name_taken`...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def connect_error(exc: BaseException, address: Address) -> ConnectFailed:
    """What went wrong opening a connection to `address`, in words."""
    if isinstance(exc, trio.TooSlowError):
        return ConnectFailed(f"timed out connecting to {address} after {CONNECT_SECONDS:.0f} s")
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            return ConnectFailed(f"cannot look up {address.host!r}: is the network up?")
        return ConnectFailed(f"unknown host {address.host!r}: check the address")
    # trio tries every address a name resolves to and reports all the failures together.
    causes: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        causes = list(exc.__cause__.exceptions)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return ConnectFailed(
            f"connection refused by {address}: is the room running, and is the port right?"
        )
    codes = {getattr(c, "errno", None) for c in causes}
    if codes & {errno.ETIMEDOUT, getattr(errno, "WSAETIMEDOUT", -1)}:
        return ConnectFailed(f"timed out connecting to {address}")
    if codes & {errno.ENETUNREACH, errno.EHOSTUNREACH}:
        return ConnectFailed(f"cannot reach {address}: is the network up?")
    detail = next((c.strerror for c in causes if isinstance(c, OSError) and c.strerror), None)
    return ConnectFailed(f"cannot connect to {address}: {detail or exc}")


async def login(
    address: Address,
    name: str,
    password: str,
    *,
    since: int | None = None,
    room: str | None = None,
) -> tuple[trio.abc.Stream, ClientConnection, Welcome]:
    """Connect and say hello to `room` (None: the server's first); the open stream, its
    protocol state and the room's welcome.

    With a personal invite in the address, its token logs in (`password` is then "").
    Raises ConnectFailed (IdentityChanged among them), NotMultichat or LoginRefused.
    """
    stream = await _connect(address)
    try:
        with trio.fail_after(HANDSHAKE_SECONDS):
            if address.transport != "tcp":
                stream = await open_websocket(stream, address.http_host, address.path)
            conn = ClientConnection()
            hello = Hello(name, password, invite=address.invite, since=since, room=room)
            await stream.send_all(conn.send(hello))
            welcome = await _answer(stream, conn, address)
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise NotMultichat(
            f"{address} did not answer within {HANDSHAKE_SECONDS:.0f} s: is it a multichat room?"
        ) from None
    except UpgradeRefused as exc:
        await trio.aclose_forcefully(stream)
        raise upgrade_error(exc, address) from None
    except (RemoteProtocolError, WebSocketError):
        await trio.aclose_forcefully(stream)
        raise NotMultichat(f"{address} is not a multichat server") from None
    except (trio.BrokenResourceError, OSError):
        await trio.aclose_forcefully(stream)
        raise ConnectFailed(f"{address} closed the connection while logging in") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream, conn, welcome


async def _connect(address: Address) -> trio.abc.Stream:
    """A TCP connection to `address`, with TLS on top for wss and invites; raises ConnectFailed."""
    try:
        with trio.fail_after(CONNECT_SECONDS):
            tcp = await trio.open_tcp_stream(address.host, address.port)
            if address.fingerprint is not None:
                return await _pinned(tcp, address, address.fingerprint)
            if address.transport != "wss":
                return tcp
            # https_compatible: servers and proxies that speak HTTPS often close without TLS's
            # close_notify; that is the end of the stream, not an attack on it.
            tls = trio.SSLStream(
                tcp,
                ssl.create_default_context(),
                server_hostname=address.host,
                https_compatible=True,
            )
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            return tls
    except trio.BrokenResourceError as exc:
        raise tls_error(exc, address) from None
    except (OSError, trio.TooSlowError) as exc:
        raise connect_error(exc, address) from None


def pinning_context() -> ssl.SSLContext:
    """TLS that trusts no CA and checks no name: the invite's fingerprint is the trust.

    The room's certificate is self-signed, and its name is whatever address friends use (a
    LAN address, a tunnel's), so neither check could pass; `_pinned` compares the certificate
    itself instead, before anything is sent.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _sni(host: str) -> str | None:
    """The name to send in TLS's SNI: none for an IP literal (RFC 6066 section 3)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    return None


async def _pinned(
    tcp: trio.SocketStream, address: Address, expected: str
) -> trio.SSLStream[trio.SocketStream]:
    """TLS over `tcp` with a room whose certificate's SHA-256 must be `expected`.

    Raises IdentityChanged, having sent nothing but the TLS handshake, if it is not.
    """
    # https_compatible: a room (or a tunnel) may close without TLS's close_notify; that ends
    # the stream, as it would without TLS.
    tls = trio.SSLStream(
        tcp, pinning_context(), server_hostname=_sni(address.host), https_compatible=True
    )
    try:
        await tls.do_handshake()
        der = tls.getpeercert(binary_form=True)
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    seen = hashlib.sha256(der or b"").hexdigest()
    if not hmac.compare_digest(seen, expected):
        await trio.aclose_forcefully(tls)
        raise IdentityChanged(
            f"the room's identity changed: {address} showed a certificate with SHA-256 {seen}, "
            "not the one its invite pins. It may be a different room at that address now, or "
            "someone in between who could read everything; nothing was sent (not your "
            "password). Ask the host for a fresh invite"
        )
    return tls


def tls_error(exc: trio.BrokenResourceError, address: Address) -> ConnectFailed:
    """Why the TLS handshake with `address` failed, in words."""
    cause = exc.__cause__
    if address.fingerprint is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        # A room from before TLS answers a ClientHello with nothing, or with plain text.
        plain = Address(address.host, address.port)
        return ConnectFailed(
            f"{address} did not complete TLS: is it a multichat room from before invites? "
            f"Then connect with {plain}"
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = (cause.verify_message or cause.reason or str(cause)).rstrip(".")
        return ConnectFailed(
            f"the certificate of {address.host} is not trusted ({why}); if the room uses its "
            "own certificate authority, point SSL_CERT_FILE at that CA's certificate"
        )
    if isinstance(cause, ssl.SSLError):
        if cause.reason == "WRONG_VERSION_NUMBER":
            return ConnectFailed(
                f"{address} does not speak TLS: for a room without it, use http:// or ws://"
            )
        if isinstance(cause, ssl.SSLEOFError) or cause.reason == "UNEXPECTED_EOF_WHILE_READING":
            return _no_tls(address)
        return ConnectFailed(f"TLS with {address} failed ({cause.reason or cause})")
    return _no_tls(address)


def _no_tls(address: Address) -> ConnectFailed:
    # A room without a certificate closes on a ClientHello without a word.
    return ConnectFailed(
        f"{address} closed the connection during the TLS handshake: "
        "if the room does not speak TLS, use http:// or ws://"
    )


def upgrade_error(exc: UpgradeRefused, address: Address) -> ClientError:
    """What an HTTP answer instead of a WebSocket means, in words."""
    if exc.ngrok_code == NGROK_ENDPOINT_OFFLINE:
        return ConnectFailed(
            f"the room at {address} is closed (ngrok says the address is offline): "
            "ask the host whether the room is up, and for its current address"
        )
    if exc.ngrok_code == NGROK_UPSTREAM_DOWN:
        return ConnectFailed(
            f"the room's server behind {address} is not answering: the tunnel is up, "
            "but the room behind it is not running"
        )
    ngrok = f" ({exc.ngrok_code})" if exc.ngrok_code else ""
    moved = f", which points to {exc.location}" if exc.location else ""
    return NotMultichat(f"{address} answered HTTP {exc.status}{ngrok}{moved}: not a multichat room")


async def _answer(stream: trio.abc.Stream, conn: ClientConnection, address: Address) -> Welcome:
    while True:
        event = conn.next_event()
        match event:
            case NeedData():
                conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
            case Welcome():
                return event
            case Error(code, message):
                raise LoginRefused(code, message)
            case Shutdown(reason):
                raise LoginRefused("shutting_down", f"the room is closing: {reason}")
            case ConnectionClosed():
                raise ConnectFailed(
                    f"{address} closed the connection without answering: is the room still running?"
                )
            case _:  # pragma: no cover - the state machine allows nothing else
                raise RemoteProtocolError(f"unexpected {event!r}")
