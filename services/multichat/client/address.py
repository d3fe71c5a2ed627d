"""The ADDRESS of `multichat connect`: what people paste, turned into where and how to connect.

Over TCP: `tcp://0.tcp.ngrok.io:12345` (as ngrok prints it), `host:port`, a bare host or LAN IP
(the default port), `[::1]:5002`, `[::1]` and a bare IPv6 address such as `::1` or `fe80::1`
(more than one colon, so it cannot carry a port).

Over WebSocket: `https://abc.ngrok-free.app` (ngrok's free plan gives HTTPS, not TCP), and
`http://192.168.1.20:5002` on a LAN. Whatever path an http(s) link carries, the client asks
for `/ws`: people paste the room page's link, and the page's socket is always there. `ws://`
and `wss://` keep their path, for a room behind a proxy that moves it.

An invite (docs/invites.md): `multichat://HOST:PORT/?room=NAME&fp=SHA256`, which `multichat up`
prints for the LAN and a TCP tunnel, is TCP with TLS to a room whose certificate must have that
SHA-256 fingerprint; a personal invite adds `&invite=TOKEN`, and on an https:// link it comes
as `#invite=TOKEN` (a fragment: browsers never send it, so no proxy logs it). The token is the
login: no password is asked for then. A link to one room of several adds `#room=NAME` (or
`&room=NAME` after the token), which the page reads too.

Surrounding spaces and a trailing slash, which come along when copying from a browser or a chat
message, are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, unquote

from ..protocol.events import DEFAULT_PORT
from ..protocol.http import WEBSOCKET_PATH

# RFC 1035: a host name has at most 253 characters; an IPv6 literal with a zone id fits too.
MAX_HOST_CHARS = 253
# RFC 1035 section 2.3.4: each dot-separated label has 1 to 63; resolvers and TLS refuse more.
MAX_LABEL_CHARS = 63
# What people paste is one word; anything longer is not an address. A page link with a query
# string fits, and so does an invite: a host name, the room's name (percent-escaped, so up to
# three times its length), a 64-digit fingerprint and a token.
MAX_ADDRESS_CHARS = 1024
# `secrets.token_urlsafe(16)` makes 22 characters; room for longer ones, never for a paragraph.
MAX_INVITE_CHARS = 128
# An invite's scheme: TCP and TLS, the certificate pinned by `fp` (hosting/invite_links.py).
INVITE_SCHEME = "multichat"

Transport = Literal["tcp", "ws", "wss"]

# What each scheme means; http(s) is what browsers and ngrok show, ws(s) what RFC 6455 names.
_SCHEMES: dict[str, Transport] = {
    "tcp": "tcp",
    "http": "ws",
    "ws": "ws",
    "https": "wss",
    "wss": "wss",
}
_ACCEPTED = "https://, http://, wss://, ws://, tcp:// or multichat://"
# RFC 6455 section 3: the default ports are those of HTTP and HTTPS.
_WEB_PORTS: dict[Transport, int] = {"ws": 80, "wss": 443}

# Letters, digits, hyphens, underscores and dots: host names, IPv4 addresses, and internal
# names some LANs use (underscores are invalid in DNS but resolvers pass them on).
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
# A request target goes on the wire as ASCII (RFC 9112): printable characters, no spaces.
_TARGET = re.compile(r"/[!-~]*")
# RFC 3986 section 3.1; anything else is not repeated back as a scheme.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
# A SHA-256 fingerprint: 64 hex digits, or 32 pairs with colons as openssl prints them.
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
# Tokens are URL-safe base64 (RFC 4648 section 5).
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


class AddressError(ValueError):
    """An ADDRESS that cannot be used; the message is one line, for the person who typed it."""


@dataclass(frozen=True)
class Address:
    """Where a room is and how to reach it.

    `host` is a name or an IP literal (IPv6 without brackets). `path` is the WebSocket request
    target, unused over tcp. From an invite: `fingerprint`, the SHA-256 (lowercase hex) the
    room's certificate must have, which means TLS over tcp; `room`, the name of the room it
    invites to (the one `connect` joins, unless `--room` says otherwise); and `invite`, a
    personal invite's token, which logs in instead of the password.
    """

    host: str
    port: int
    transport: Transport = "tcp"
    path: str = WEBSOCKET_PATH
    fingerprint: str | None = None
    room: str | None = None
    invite: str | None = field(default=None, repr=False)  # a secret: kept out of logs

    @property
    def tls(self) -> bool:
        """Whether the connection is TLS: wss, or an invite's pinned certificate."""
        return self.transport == "wss" or self.fingerprint is not None

    def __str__(self) -> str:
        """The address as people read it, in messages: never an invite's token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.fingerprint is not None:
            return f"{INVITE_SCHEME}://{host}:{self.port}"
        return self.url

    @property
    def url(self) -> str:
        """The address in the form people paste, which `parse_address` reads back the same,
        but for an invite's token (a secret: it is left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.fingerprint is not None:
            room = f"room={quote(self.room, safe='')}&" if self.room is not None else ""
            return f"{INVITE_SCHEME}://{host}:{self.port}/?{room}fp={self.fingerprint}"
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


def _parameters(text: str, original: str) -> dict[str, str]:
    """`a=1&b=2` (a query or a fragment), unescaped; a name given twice is refused."""
    found: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key = unquote(key)
        if key in found:
            raise AddressError(f"{original!r} gives {key!r} twice; paste the invite as it came")
        found[key] = unquote(value)
    return found


def _token(value: str | None, original: str) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_INVITE_CHARS or not _TOKEN.fullmatch(value):
        raise AddressError(f"{original!r}: the invite token is not valid (mistyped?)")
    return value


def _invite_address(rest: str, original: str) -> Address:
    """What follows `multichat://`: HOST:PORT, then `?room=NAME&fp=SHA256[&invite=TOKEN]`."""
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, target = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    host, port = _host_port(authority, original, DEFAULT_PORT, url=True)
    target, _, fragment = target.partition("#")
    _, _, query = target.partition("?")
    found = _parameters(query, original)
    # A token in the fragment, as on an https:// link, is welcome too.
    for key, value in _parameters(fragment, original).items():
        if key in found:
            raise AddressError(f"{original!r} gives {key!r} twice; paste the invite as it came")
        found[key] = value
    given = found.get("fp")
    if not given:
        raise AddressError(
            f"{original!r} has no fp= (the room's certificate fingerprint): "
            "paste the whole invite, as the host gave it"
        )
    fingerprint = given.replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise AddressError(
            f"{original!r}: fp= must be the room's SHA-256 fingerprint, 64 hex digits"
        )
    return Address(
        host,
        port,
        fingerprint=fingerprint,
        room=found.get("room"),
        invite=_token(found.get("invite"), original),
    )


def _web_address(transport: Transport, scheme: str, rest: str, original: str) -> Address:
    """What follows `scheme://` in a web link: the host, maybe a port, maybe a path."""
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, target = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    host, port = _host_port(authority, original, _WEB_PORTS[transport], url=True)
    target, _, fragment = target.partition("#")
    found = _parameters(fragment, original) if fragment else {}
    invite = _token(found.get("invite"), original)
    if scheme in ("http", "https") or target in ("", "/"):
        # A page link (`https://room/`, `https://room/?from=chat`) means the room's socket.
        target = WEBSOCKET_PATH
    elif target.startswith("?"):
        target = "/" + target
    if not _TARGET.fullmatch(target):
        raise AddressError(f"{original!r}: the path must be plain ASCII, not {target!r}")
    return Address(host, port, transport, target, room=found.get("room") or None, invite=invite)


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
    if sep and scheme == INVITE_SCHEME:
        return _invite_address(rest, original)
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
