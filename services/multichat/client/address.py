"""The ADDRESS of `multichat connect`: what people paste, turned into where and how to connect.

Over TCP: `tcp://0.tcp.ngrok.io:12345` (as ngrok prints it), `host:port`, a bare host or LAN IP
(the default port), `[::1]:5002`, `[::1]` and a bare IPv6 address such as `::1` or `fe80::1`
(more than one colon, so it cannot carry a port).

Over WebSocket: `https://abc.ngrok-free.app` (ngrok's free plan gives HTTPS, not TCP), and
`http://192.168.1.20:5002` on a LAN. Whatever path an http(s) link carries, the client asks
for `/ws`: people paste the room page's link, and the page's socket is always there. `ws://`
and `wss://` keep their path, for a room behind a proxy that moves it.

Surrounding spaces and a trailing slash, which come along when copying from a browser or a chat
message, are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from ..protocol.events import DEFAULT_PORT
from ..protocol.http import WEBSOCKET_PATH

# RFC 1035: a host name has at most 253 characters; an IPv6 literal with a zone id fits too.
MAX_HOST_CHARS = 253
# RFC 1035 section 2.3.4: each dot-separated label has 1 to 63; resolvers and TLS refuse more.
MAX_LABEL_CHARS = 63
# What people paste is one word; anything longer is not an address. A page link with a query
# string fits.
MAX_ADDRESS_CHARS = 300

Transport = Literal["tcp", "ws", "wss"]

# What each scheme means; http(s) is what browsers and ngrok show, ws(s) what RFC 6455 names.
_SCHEMES: dict[str, Transport] = {
    "tcp": "tcp",
    "http": "ws",
    "ws": "ws",
    "https": "wss",
    "wss": "wss",
}
_ACCEPTED = "https://, http://, wss://, ws:// or tcp://"
# RFC 6455 section 3: the default ports are those of HTTP and HTTPS.
_WEB_PORTS: dict[Transport, int] = {"ws": 80, "wss": 443}

# Letters, digits, hyphens, underscores and dots: host names, IPv4 addresses, and internal
# names some LANs use (underscores are invalid in DNS but resolvers pass them on).
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
# A request target goes on the wire as ASCII (RFC 9112): printable characters, no spaces.
_TARGET = re.compile(r"/[!-~]*")
# RFC 3986 section 3.1; anything else is not repeated back as a scheme.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


class AddressError(ValueError):
    """An ADDRESS that cannot be used; the message is one line, for the person who typed it."""


@dataclass(frozen=True)
class Address:
    """Where a room is and how to reach it.

    `host` is a name or an IP literal (IPv6 without brackets). `path` is the WebSocket request
    target, unused over tcp.
    """

    host: str
    port: int
    transport: Transport = "tcp"
    path: str = WEBSOCKET_PATH

    def __str__(self) -> str:
        """The address in the form people paste, which `parse_address` reads back the same."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.transport == "tcp":
            return f"{host}:{self.port}"
        port = "" if self.port == _WEB_PORTS[self.transport] else f":{self.port}"
        if self.path == WEBSOCKET_PATH:
            scheme = "https" if self.transport == "wss" else "http"
            return f"{scheme}://{host}{port}"
        return f"{self.transport}://{host}{port}{self.path}"

    @property
    def http_host(self) -> str:
        """The Host header of the WebSocket upgrade: the port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.transport != "tcp" and self.port == _WEB_PORTS[self.transport]:
            return host
        return f"{host}:{self.port}"


def _port(text: str, original: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise AddressError(f"{original!r}: the port must be a number, not {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise AddressError(f"{original!r}: the port must be between 1 and 65535, not {port}")
    return port


def _host(text: str, original: str) -> str:
    if not text:
        raise AddressError(f"{original!r} has no host name")
    if len(text) > MAX_HOST_CHARS:
        raise AddressError(f"{original!r}: the host name is too long")
    if ":" in text:
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise AddressError(f"{original!r}: {text!r} is not an IPv6 address") from None
        return text
    name = text.rstrip(".") or text
    if not _HOSTNAME.fullmatch(text) or not all(
        0 < len(label) <= MAX_LABEL_CHARS for label in name.split(".")
    ):
        raise AddressError(f"{original!r}: {text!r} is not a host name or IP address")
    return name


def _host_port(text: str, original: str, default_port: int, *, url: bool) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; a bare IPv6 address too, except in a URL."""
    if "@" in text:
        raise AddressError(f"{original!r} is not an address; try {_hint(url)}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"{original!r}: missing ']' after the IPv6 address")
        host, after = text[1:end], text[end + 1 :]
        if ":" not in host:
            raise AddressError(f"{original!r}: only IPv6 addresses go in brackets")
        if not after:
            return _host(host, original), default_port
        if not after.startswith(":"):
            raise AddressError(f"{original!r}: expected ':PORT' after ']'")
        return _host(host, original), _port(after[1:], original)
    if text.count(":") > 1:
        if url:
            raise AddressError(f"{original!r}: put an IPv6 address in brackets, as in [::1]")
        return _host(text, original), default_port
    host, sep, port = text.partition(":")
    return _host(host, original), _port(port, original) if sep else default_port


def _hint(url: bool) -> str:
    return "https://HOST" if url else "HOST, HOST:PORT, tcp://HOST:PORT or https://HOST"


def _web_address(transport: Transport, scheme: str, rest: str, original: str) -> Address:
    """What follows `scheme://` in a web link: the host, maybe a port, maybe a path."""
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, target = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    host, port = _host_port(authority, original, _WEB_PORTS[transport], url=True)
    target = target.partition("#")[0]
    if scheme in ("http", "https") or target in ("", "/"):
        # A page link (`https://room/`, `https://room/?from=chat`) means the room's socket.
        target = WEBSOCKET_PATH
    elif target.startswith("?"):
        target = "/" + target
    if not _TARGET.fullmatch(target):
        raise AddressError(f"{original!r}: the path must be plain ASCII, not {target!r}")
    return Address(host, port, transport, target)


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """Where `text` points, or raise AddressError saying what is wrong.

    `default_port` is for the TCP forms; web links default to 80 and 443 as browsers do.
    """
    original = text
    text = text.strip()
    if not text:
        raise AddressError(f"the address is empty; try {_hint(url=False)}")
    if len(text) > MAX_ADDRESS_CHARS:
        raise AddressError("the address is too long")
    if any(c.isspace() for c in text):
        raise AddressError(f"{original!r} is not an address; try {_hint(url=False)}")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if sep:
        transport = _SCHEMES.get(scheme)
        if transport is None:
            named = f"{scheme}://" if _SCHEME.fullmatch(scheme) else "that scheme"
            raise AddressError(f"{original!r}: multichat cannot use {named}; use {_ACCEPTED}")
        if transport != "tcp":
            return _web_address(transport, scheme, rest, original)
        text = rest
    text = text.removesuffix("/")
    if "/" in text:
        raise AddressError(f"{original!r} is not an address; try {_hint(url=False)}")
    host, port = _host_port(text, original, default_port, url=False)
    return Address(host, port)
