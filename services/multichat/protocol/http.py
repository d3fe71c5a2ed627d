"""HTTP/1.1 on the room's port, sans-I/O: one request in, one answer out (h11 underneath).

A browser asks for the page and its files, or asks to upgrade `/ws` to a WebSocket that then
speaks multichat/1 (websocket.py). Every answer closes the connection: one request per
connection keeps the per-source limits exact (a tunnel may put many friends' requests on one
kept-alive connection, each with its own X-Forwarded-For). A browser fetches the page's files
over up to 6 connections at once, which the server's per-source limits allow.

Which file exists and what it holds is the server's business; this module only parses, routes
and frames. Bad requests raise `RemoteProtocolError` with code `bad_request`.
"""

from __future__ import annotations

import base64
import binascii
import http
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
from wsproto.utilities import generate_accept_token

from .errors import RemoteProtocolError
from .events import NEED_DATA, NeedData

# A browser's request head is 1 to 2 KiB with cookies; Apache and nginx refuse past 8 KiB.
MAX_REQUEST_HEAD = 8 * 1024
# The path the page opens its WebSocket on.
WEBSOCKET_PATH = "/ws"
# RFC 6455 section 4.1: the only version there is.
WEBSOCKET_VERSION = b"13"
# What a browser may run and fetch: our own files and our own socket, nothing inline, nothing
# from elsewhere, and no other site may frame the page (the strictest policy the page allows).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
# The request methods a browser or a client library sends; a first line that starts with one
# of them and a space is HTTP, not a password typed into nc.
_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT")
_FILE_NAME = re.compile(r"/([A-Za-z0-9_-][A-Za-z0-9_.-]{0,63})")


def looks_like_http(data: bytes) -> bool | None:
    """Whether the first bytes of a connection are an HTTP request; None until they can tell."""
    for method in _METHODS:
        probe = method + b" "
        if data.startswith(probe):
            return True
        if probe.startswith(data):
            return None  # "GE": a request or a password, the next bytes will say
    return False


@dataclass(frozen=True, slots=True)
class Request:
    """What the server needs of one request; header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    def wants_websocket(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "upgrade" in connection and self.headers.get("upgrade", "").lower() == "websocket"

    def same_origin(self) -> bool:
        """Whether a browser's `Origin` is the page's own; a client with none is no browser.

        Comparing with `Host` (not a configured name) works on the LAN and through a tunnel,
        which passes the public host name on; the scheme is the tunnel's business.
        """
        origin = self.headers.get("origin")
        if origin is None:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc.lower() == self.host.lower()

    def forwarded_for(self) -> str | None:
        """The address the nearest proxy saw (the last `X-Forwarded-For` entry), if valid.

        Each proxy appends the address it received the request from, so only the last entry
        comes from the tunnel we trust; the ones before it are whatever the client claimed.
        """
        values = self.headers.get("x-forwarded-for")
        if not values:
            return None
        last = values.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return None


class HttpConnection:
    """One HTTP/1.1 request on the server side: `receive_data`, `next_request`, one answer."""

    __slots__ = ("_h11", "_received", "_request")

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self._request: Request | None = None
        self._received = 0  # h11 bounds a head that arrives in pieces, not one read whole

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; `b""` means it closed."""
        self._received += len(data)
        self._h11.receive_data(data)

    def next_request(self) -> Request | NeedData:
        """The request, once its head is complete. Raises RemoteProtocolError (`bad_request`)."""
        if self._request is not None:
            return self._request
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(f"bad HTTP request: {exc}", "bad_request") from None
        if event is h11.NEED_DATA:
            if self._received > MAX_REQUEST_HEAD:
                raise RemoteProtocolError("the request head is too large", "bad_request")
            return NEED_DATA
        if not isinstance(event, h11.Request):
            raise RemoteProtocolError("the connection closed before its request", "bad_request")
        if event.http_version not in (b"1.0", b"1.1"):
            raise RemoteProtocolError("HTTP/1.0 and 1.1 only", "bad_request")
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers.raw_items())
        if size > MAX_REQUEST_HEAD:
            raise RemoteProtocolError("the request head is too large", "bad_request")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("ascii").lower()
            text = value.decode("latin-1")
            # Repeated headers are one list (RFC 9110 section 5.3): X-Forwarded-For above all.
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = event.target.decode("ascii", "replace")
        self._request = Request(event.method.decode("ascii"), urlsplit(target).path, headers)
        return self._request

    @property
    def trailing_data(self) -> bytes:
        """Bytes the client sent after its request head (a WebSocket's first frames)."""
        data, _closed = self._h11.trailing_data
        return bytes(data)

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
    ) -> bytes:
        """The whole answer, which closes the connection; no body for HEAD."""
        fields = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Cache-Control", "no-cache"),
            *_SECURITY_HEADERS,
            *(headers or []),
        ]
        head = h11.Response(
            status_code=status, headers=fields, reason=http.HTTPStatus(status).phrase
        )
        try:
            data = self._h11.send(head)
            if self._request is not None and self._request.method != "HEAD":
                data = (data or b"") + (self._h11.send(h11.Data(data=body)) or b"")
            return (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            # The request was too broken for h11 to answer it: answer by hand, and close.
            return _fixed_response(status, body, content_type)

    def accept_websocket(self) -> bytes:
        """The 101 answer to this request's WebSocket upgrade. Raises RemoteProtocolError."""
        request = self._request
        assert request is not None and request.wants_websocket()
        key = request.headers.get("sec-websocket-key", "")
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            valid = False
        if request.method != "GET" or not valid:
            raise RemoteProtocolError("bad WebSocket handshake", "bad_request")
        fields: list[tuple[str, str]] = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", generate_accept_token(key.encode("ascii")).decode("ascii")),
        ]
        return self._h11.send(h11.InformationalResponse(status_code=101, headers=fields)) or b""

    def websocket_version_ok(self) -> bool:
        assert self._request is not None
        return self._request.headers.get("sec-websocket-version", "").encode() == WEBSOCKET_VERSION


def refusal(status: int, message: str) -> bytes:
    """A whole answer refusing a request with `message` as plain text, without reading it
    (the server refuses before it parses anything: a connection over its limits)."""
    return _fixed_response(status, message.encode() + b"\n", "text/plain; charset=utf-8")


def _fixed_response(status: int, body: bytes, content_type: str) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def file_name(path: str) -> str | None:
    """The page file a path names (`/` is `index.html`), or None if it cannot name one."""
    if path == "/":
        return "index.html"
    match = _FILE_NAME.fullmatch(path)
    return match.group(1) if match and ".." not in path else None
