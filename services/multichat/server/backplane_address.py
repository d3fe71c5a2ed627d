"""Where the backplane is: `redis://HOST[:PORT][/DB]` (or `rediss://` for TLS), as typed after
`--backplane` or in `MULTICHAT_BACKPLANE`, checked into a `BackplaneAddress`. No I/O.

A bad address is one line saying what is wrong and what is expected, like every other setting
the host types: the room does not start on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .backplane_errors import BackplaneError

# Redis's own port, as its documentation and every client default to it.
DEFAULT_PORT = 6379
_SCHEMES = {"redis": False, "rediss": True}
EXPECTED = "redis://HOST[:PORT][/DB] or rediss://... for TLS"


@dataclass(frozen=True, slots=True)
class BackplaneAddress:
    """A Redis to join. `str()` of it never shows the password, so it may go in logs."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = "***@" if self.password is not None or self.username else ""
        return f"{scheme}://{auth}{host}:{self.port}/{self.db}"


def parse_address(url: str) -> BackplaneAddress:
    """The address `url` names; raises BackplaneError with a one-line reason."""
    text = url.strip()

    def bad(why: str) -> BackplaneError:
        return BackplaneError(f"bad backplane address {text!r}: {why} (expected {EXPECTED})")

    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise bad(str(exc)) from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.scheme:
        raise bad("it does not start with redis:// or rediss://")
    if parts.scheme not in _SCHEMES:
        raise bad(f"the scheme {parts.scheme!r} is not redis:// or rediss://")
    if not parts.hostname:
        raise bad("no host")
    if port == 0:
        raise bad("the port is not a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise bad("options after ? or # are not supported")
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isdigit() and path.isascii():
        db = int(path)  # past the server's `databases`, Redis itself says so when joining
    else:
        raise bad(f"the database {path!r} is not a number")
    return BackplaneAddress(
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        db=db,
        tls=_SCHEMES[parts.scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )
