"""The strings a host gives friends, and the QR code a phone scans.

An invite says where the room is and how to trust it, in one string:

    multichat://HOST:PORT/?room=NAME&fp=SHA256            (the LAN, a TCP tunnel)
    https://abc.ngrok-free.app                            (the HTTPS tunnel: a CA vouches)
    https://192.168.1.20:5002/                            (a browser on the LAN, no tunnel)

A browser cannot pin: on the LAN it warns about the room's own certificate, and the person
compares its SHA-256 with the banner's before going on. That link is offered only when there
is no public one, since it is the only way a phone on the LAN can join.

`fp` is the SHA-256 of the room's certificate (see certificate.py); `multichat connect` checks
it before sending anything. A personal invite adds its token: `&invite=TOKEN` on the first
form, `#invite=TOKEN` on the link, in the fragment, which browsers never send, so no proxy or
tunnel logs it. The client reads these in client/address.py (the two wings cannot share code;
tests/hosting/test_invites_cli.py holds them together).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from urllib.parse import quote

from .statefile import RoomState

SCHEME = "multichat"
# The `where` of the page's link on the LAN.
LAN_BROWSER = "LAN browser"
# segno's compact form draws two rows of modules per line with these block characters.
_BLOCKS = "\u2580\u2584\u2588"
# Where those cannot be printed (an ASCII-only console), each module is two characters wide
# and one line tall: larger, still square enough to scan.
ASCII_DARK, ASCII_LIGHT = "  ", "##"


def pinned(host: str, port: int, room: str, fingerprint: str, token: str | None = None) -> str:
    """`multichat://HOST:PORT/?room=NAME&fp=SHA256`, with `&invite=TOKEN` if given."""
    host = f"[{host}]" if ":" in host else host
    # Everything but unreserved characters is escaped, so the string is safe between single
    # quotes in a shell and in a chat message, whatever the room is called.
    invite = f"{SCHEME}://{host}:{port}/?room={quote(room, safe='')}&fp={fingerprint}"
    return invite if token is None else f"{invite}&invite={quote(token, safe='')}"


def link(https: str, token: str | None = None) -> str:
    """The HTTPS link, with `#invite=TOKEN` (a fragment: never sent to a server) if given."""
    return https if token is None else f"{https.rstrip('/')}/#invite={quote(token, safe='')}"


def lan_link(host: str, port: int, token: str | None = None) -> str:
    """`https://HOST:PORT/`, the page on the LAN, with the token in its fragment if given."""
    host = f"[{host}]" if ":" in host else host
    return link(f"https://{host}:{port}/", token)


def tcp_host_port(tcp: str) -> tuple[str, int] | None:
    """`tcp://HOST:PORT` as ngrok prints it, split; None if it is not that."""
    host, sep, port = tcp.removeprefix("tcp://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class InviteText:
    """One way in, as given to a friend: where it works (for the host), and the string."""

    where: str  # "public link", "TCP tunnel", "LAN", "this machine", LAN_BROWSER
    text: str
    terminal: bool  # for `multichat connect` (a link also opens in a browser)

    def command(self) -> str:
        """What a friend types: single quotes keep a shell off `&` and `?`."""
        return f"multichat connect '{self.text}'" if self.terminal else self.text


def room_invites(state: RoomState, token: str | None = None) -> list[InviteText]:
    """Every invite to the room in `state`, the one a phone would use first.

    The public link leads (a phone opens it in a browser); then the TCP tunnel and the LAN
    addresses, pinned to the room's certificate; without a public link, the page at each LAN
    address after them. None but the public link without a fingerprint (a state file from a
    room before TLS).
    """
    invites = []
    if state.https:
        invites.append(InviteText("public link", link(state.https, token), terminal=False))
    if not state.fingerprint:
        return invites
    tcp = tcp_host_port(state.tcp) if state.tcp else None
    if tcp is not None:
        text = pinned(*tcp, state.room, state.fingerprint, token)
        invites.append(InviteText("TCP tunnel", text, terminal=True))
    lan = []
    for address in state.lan or [state.control_host()]:
        where = "this machine" if address in ("127.0.0.1", "::1", "localhost") else "LAN"
        text = pinned(address, state.port, state.room, state.fingerprint, token)
        invites.append(InviteText(where, text, terminal=True))
        if where == "LAN":
            lan.append(address)
    if not state.https:
        for address in lan:
            text = lan_link(address, state.port, token)
            invites.append(InviteText(LAN_BROWSER, text, terminal=False))
    return invites


def invite_lines(invites: list[InviteText], indent: str = "  ") -> list[str]:
    """One line per invite, its `where` first, aligned: what to copy, as a friend uses it."""
    width = max((len(invite.where) for invite in invites), default=0) + 1
    return [f"{indent}{f'{invite.where}:'.ljust(width)}  {invite.command()}" for invite in invites]


def for_a_phone(invites: list[InviteText]) -> InviteText | None:
    """The invite the QR code shows: a link a phone's camera opens in its browser, the public
    one or else the LAN's; without either, the first."""
    for where in ("public link", LAN_BROWSER):
        for invite in invites:
            if invite.where == where:
                return invite
    return invites[0] if invites else None


def qr_lines(data: str, encoding: str | None = "utf-8") -> list[str]:
    """`data` as a QR code drawn with text, a line per list item (no trailing newlines).

    Half-block characters draw two rows of modules per line, light modules as blocks: the
    code reads right on a dark terminal, and most phone scanners read the inverse too. If
    `encoding` (the output's; None for one in memory) cannot carry those characters, `##`
    pairs draw it in ASCII.
    """
    import segno  # only the commands that draw one pay for loading it

    qr = segno.make(data, micro=False)
    if _can_encode(_BLOCKS, encoding):
        drawn = io.StringIO()
        qr.terminal(out=drawn, compact=True)
        return drawn.getvalue().splitlines()
    return [
        "".join(ASCII_DARK if dark else ASCII_LIGHT for dark in row)
        for row in qr.matrix_iter(scale=1, border=4)
    ]


def _can_encode(text: str, encoding: str | None) -> bool:
    try:
        text.encode(encoding or "utf-8")  # no encoding: an in-memory text stream
    except (UnicodeEncodeError, LookupError):
        return False
    return True
