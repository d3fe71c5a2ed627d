"""The ADDRESS of `multichat connect`: what people paste, turned into a host and a port.

Accepted: `tcp://0.tcp.ngrok.io:12345` (as ngrok prints it), `host:port`, a bare host or LAN IP
(the default port), `[::1]:5002`, `[::1]` and a bare IPv6 address such as `::1` or `fe80::1`
(more than one colon, so it cannot carry a port). Surrounding spaces and a trailing slash, which
come along when copying from a browser or a chat message, are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..protocol.events import DEFAULT_PORT

# RFC 1035: a host name has at most 253 characters; an IPv6 literal with a zone id fits too.
MAX_HOST_CHARS = 253
# What people paste is one word; anything longer is not an address.
MAX_ADDRESS_CHARS = 300

# Letters, digits, hyphens, underscores and dots: host names, IPv4 addresses, and internal
# names some LANs use (underscores are invalid in DNS but resolvers pass them on).
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


class AddressError(ValueError):
    """An ADDRESS that cannot be used; the message is one line, for the person who typed it."""


@dataclass(frozen=True)
class Address:
    """Where a room is: `host` is a name or an IP literal (IPv6 without brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
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
    if not _HOSTNAME.fullmatch(text):
        raise AddressError(f"{original!r}: {text!r} is not a host name or IP address")
    return text.rstrip(".") or text


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """The host and port in `text`, or raise AddressError saying what is wrong."""
    original = text
    text = text.strip()
    if not text:
        raise AddressError("the address is empty; try HOST, HOST:PORT or tcp://HOST:PORT")
    if len(text) > MAX_ADDRESS_CHARS:
        raise AddressError("the address is too long")
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() != "tcp":
            raise AddressError(
                f"{original!r}: multichat needs a tcp:// address (an ngrok TCP tunnel), "
                f"not {scheme}://"
            )
        text = rest
    text = text.removesuffix("/")
    if any(c.isspace() for c in text) or "/" in text or "@" in text:
        raise AddressError(
            f"{original!r} is not an address; try HOST, HOST:PORT or tcp://HOST:PORT"
        )
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"{original!r}: missing ']' after the IPv6 address")
        host, after = text[1:end], text[end + 1 :]
        if ":" not in host:
            raise AddressError(f"{original!r}: only IPv6 addresses go in brackets")
        if not after:
            return Address(_host(host, original), default_port)
        if not after.startswith(":"):
            raise AddressError(f"{original!r}: expected ':PORT' after ']'")
        return Address(_host(host, original), _port(after[1:], original))
    if text.count(":") > 1:
        return Address(_host(text, original), default_port)
    host, sep, port = text.partition(":")
    return Address(_host(host, original), _port(port, original) if sep else default_port)
