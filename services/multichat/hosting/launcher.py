"""`multichat up` and `multichat tunnel`: a room (or a bare tunnel) with public addresses.

`up` serves the room on the LAN at once, then opens the ngrok tunnel beside it: an HTTPS link,
always, and a TCP address when the ngrok account allows it. The banner leads with the link for
browsers, then the exact commands friends type. A tunnel that cannot open never takes the room
down, and neither does a refused TCP address: the banner says why, in one line, and how to fix
it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TextIO
from urllib.parse import quote

import trio

from ..protocol.events import DEFAULT_PORT
from ..server.listeners import ChatServer
from . import invite_links
from .ngrok_errors import TunnelError
from .process import host_room, watch_signals
from .statefile import RoomState, write_state
from .tunnel import OPEN_DEADLINE, TunnelSettings
from .tunnel_supervision import (
    MAX_REOPEN_ATTEMPTS,
    TunnelClosed,
    TunnelEvent,
    TunnelFailed,
    TunnelLog,
    TunnelOpened,
    TunnelOpening,
    TunnelReopening,
    supervise_tunnel,
)

# Generated passwords: consonant-vowel syllables read aloud easily ("tavo-mire-kuna"); three
# groups of two syllables give about 38 bits, plenty behind a 3-a-minute login throttle.
_CONSONANTS = "bdfghjklmnprstvz"
_VOWELS = "aeiou"
PASSWORD_GROUPS = 3
# PROXY protocol v2 carries each friend's real address through the TCP endpoint; the HTTPS
# endpoint carries it in X-Forwarded-For (see server/listeners.py).
TUNNEL_PROXY_PROTOCOL = 2


def generate_password() -> str:
    """A random password that is easy to read out and type."""

    def group() -> str:
        return "".join(secrets.choice(_CONSONANTS) + secrets.choice(_VOWELS) for _ in range(2))

    return "-".join(group() for _ in range(PASSWORD_GROUPS))


def _address(host: str, port: int, *, always_port: bool = False) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port == DEFAULT_PORT and not always_port else f"{host}:{port}"


def _where(host: str) -> str:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return "(this machine only)" if loopback else "(same network)"


def describe(error: TunnelError) -> str:
    """What went wrong and how to fix it, in one line, saying the cause once."""
    code = f" ({error.ngrok_code})" if error.ngrok_code else ""
    cause = str(error).removesuffix(code)
    # Most fixes begin by restating the cause ("ngrok needs an authtoken: set ...").
    if error.fix.lower().startswith(cause.lower()):
        return f"{error.fix}{code}"
    return f"{cause}{code}. Fix: {error.fix}"


@dataclass
class Banner:
    """What `up` tells the host, printed to `out` (stdout: the banner is the output)."""

    room: str
    out: TextIO = sys.stdout
    password: str | None = None  # shown only when generated
    # A QR code of the invite a phone would use, drawn with text even into a file or a pipe:
    # `docker compose logs` is where a host finds it then. `--no-qr` leaves it out.
    qr: bool = True
    identity: str = ""  # where the room's certificate comes from (certificate.py's `where`)
    rooms: tuple[str, ...] = ()  # the host's other rooms, beside `room` (the first)

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def show(
        self,
        state: RoomState,
        *,
        https: str | None = None,
        tcp: str | None = None,
        problems: Sequence[str] = (),
        tunnel: bool = True,
    ) -> None:
        """The addresses, most useful first: the link a browser opens, then the commands."""
        rule = "-" * 64
        self.say(rule)
        self.say(f"  multichat room {self.room!r} is up")
        if self.rooms:
            others = ", ".join(repr(r) for r in self.rooms)
            self.say(f"  More rooms: {others} (friends land in {self.room!r}; /join NAME moves)")
        if self.password:
            self.say(f"  Password: {self.password}   (generated: share it with your friends)")
        self.say("")
        if https:
            self.say(f"  Open in a browser: {https}")
            for other in self.rooms:
                # A link straight into a room (the page and `connect` read the fragment).
                self.say(f"    {other}: {https.rstrip('/')}/#room={quote(other, safe='')}")
            self.say("  Or in a terminal:")
            self.say(f"    multichat connect {https}")
        elif state.lan and state.fingerprint:
            # No public link: a phone on the same network still joins from its browser.
            for address in state.lan:
                page = invite_links.lan_link(address, state.port)
                self.say(f"  In a browser on your network: {page}")
                for other in self.rooms:
                    self.say(f"    {other}: {page}#room={quote(other, safe='')}")
            self.say("    (it warns about the room's own certificate: go on if the SHA-256 it")
            self.say("    shows is the one below)")
            self.say("  Or in a terminal:")
        else:
            self.say("  Friends join with:")
        if tcp:
            self.say(f"    multichat connect {tcp}")
        for address in state.lan:
            self.say(f"    multichat connect {_address(address, state.port)}   {_where(address)}")
        if not state.lan:
            here = "127.0.0.1"
            self.say(f"    multichat connect {_address(here, state.port)}   {_where(here)}")
        self.say(
            "  (or `nc HOST PORT` / `telnet HOST PORT` on a TCP or LAN address; type tata to leave)"
        )
        self.say("")
        if not tunnel:
            self.say("  Public:   none (--no-tunnel): only your own network can join")
        else:
            self.say(f"  Public:   {https or 'not available'}")
        if tcp:
            self.say(f"  TCP:      {tcp}")
        for address in state.lan:
            self.say(f"  LAN:      {_address(address, state.port, always_port=True)}")
        for problem in problems:
            self.say(f"  ! {problem}")
        self.say("")
        self.show_invites(replace(state, https=https, tcp=tcp))
        self.say("  Close the room: Ctrl-C, type `shutdown` here, or run `multichat down`.")
        self.say(rule)

    def show_invites(self, state: RoomState) -> None:
        """Each invite (one string: where the room is and how to trust it), then the QR code."""
        invites = invite_links.room_invites(state)
        if not invites:
            return
        self.say("  Invites (one string each: where the room is, and how to trust it):")
        for line in invite_links.invite_lines(invites, indent="    "):
            self.say(line)
        if state.fingerprint:
            self.say(f"  Certificate: SHA-256 {state.fingerprint}")
            if self.identity:
                self.say(f"    ({self.identity})")
        self.say("")
        phone = invite_links.for_a_phone(invites)
        if self.qr and phone is not None:
            self.say(f"  Scan with a phone ({phone.where}):")
            for line in invite_links.qr_lines(phone.text, getattr(self.out, "encoding", None)):
                self.say(f"  {line}")
            self.say("")


def announce_invites(state: RoomState, identity: str, out: TextIO) -> None:
    """`serve`'s invites at start: one line each (for a log), and the certificate's source."""
    for invite in invite_links.room_invites(state):
        print(f"Invite ({invite.where}): {invite.text}", file=out, flush=True)
    if state.fingerprint:
        print(f"Certificate: SHA-256 {state.fingerprint} ({identity})", file=out, flush=True)


class TunnelReporter:
    """Turns tunnel events into lines for the host, and keeps the state file's addresses.

    Until the banner is shown it only takes notes (the banner says it all); after, each change
    is a few lines, the link for browsers first.
    """

    def __init__(self, say: Callable[[str], None], verbose: bool) -> None:
        self.say = say
        self.verbose = verbose
        self.https: str | None = None
        self.tcp: str | None = None
        self.problem: str | None = None  # why the room has no public address
        self.tcp_problem: str | None = None  # why it has no TCP address (the link works)
        self.on_address: Callable[[str | None, str | None], None] = lambda https, tcp: None
        self.banner_shown = False
        self.gave_up = False  # supervision ended on a failure: no more attempts
        self._opened = False

    @property
    def problems(self) -> list[str]:
        """What the banner warns about, one line each."""
        return [p for p in (self.problem, self.tcp_problem) if p]

    def __call__(self, event: TunnelEvent) -> None:
        match event:
            case TunnelOpening(attempt) if attempt == 0:
                self.say(f"Opening the public ngrok tunnel (up to {OPEN_DEADLINE:.0f} s)...")
            case TunnelOpened(https, tcp, tcp_error):
                again, self._opened = self._opened, True
                self.https, self.tcp, self.problem, self.gave_up = https, tcp, None, False
                if tcp_error is not None:
                    self.tcp_problem = f"No TCP address: {describe(tcp_error)}"
                elif tcp is not None:
                    self.tcp_problem = None
                self.on_address(https, tcp)
                if self.banner_shown:
                    if again:
                        self.say("The tunnel is open again, at new addresses:")
                    self.say(f"Open in a browser: {https}")
                    self.say(f"Friends join with: multichat connect {https}")
                    if tcp:
                        self.say(f"TCP address: {tcp}")
                    if tcp_error is not None:
                        self.say(self.tcp_problem or "")
            case TunnelFailed(error):
                if error.code == "download_failed":
                    # pyngrok's installer ends its progress line ("Downloading ngrok ...") with
                    # a carriage return and leaves it there when the download fails: end it,
                    # or what comes next runs into it in a log.
                    self.say("")
                lost = self.https is not None
                self.https = self.tcp = None
                self.gave_up = True
                what = "The public tunnel closed" if lost else "Public tunnel failed"
                self.problem = f"{what}: {describe(error)}"
                self.on_address(None, None)
                if self.banner_shown:
                    self.say(self.problem)
            case TunnelReopening(attempt, delay):
                self.gave_up = False
                retry = f"trying again in {delay:.0f} s, attempt {attempt} of {MAX_REOPEN_ATTEMPTS}"
                if self.banner_shown:
                    self.say(f"{retry[0].upper()}{retry[1:]}...")
                elif self.problem:
                    self.problem = f"{self.problem} ({retry})"
            case TunnelLog(line) if self.verbose:
                self.say(f"ngrok: {line}")
            case TunnelClosed() if self.gave_up and self.banner_shown:
                self.say("Gave up on the public tunnel: fix the above, then start again.")


async def run_up(
    server: ChatServer,
    port: int,
    host: str | None,
    *,
    token: str,
    banner: Banner,
    settings: TunnelSettings | None,
    fingerprint: str = "",
) -> None:
    """Serve the room; open the tunnel beside it unless `settings` is None.

    `fingerprint` is the room's certificate's, which the invites in the banner pin.
    """

    async def started(nursery: trio.Nursery, state: RoomState) -> None:
        if settings is None:
            banner.show(state, tunnel=False)
            return
        reporter = TunnelReporter(banner.say, settings.verbose)
        current = [state]

        def report(event: TunnelEvent) -> None:
            # Once the room is closing, the tunnel's comings and goings are nobody's concern.
            if server.shutdown_reason is None:
                reporter(event)

        def record(https: str | None, tcp: str | None) -> None:
            current[0] = replace(current[0], https=https, tcp=tcp)
            # Failing to record it only makes `status` show a stale address.
            with contextlib.suppress(OSError):
                write_state(current[0])

        reporter.on_address = record
        # Both endpoints go to the loopback listener that trusts what the tunnel says of each
        # friend: a PROXY header on the TCP endpoint's connections, X-Forwarded-For on the
        # HTTPS endpoint's requests.
        assert server.proxy_port is not None
        await nursery.start(
            supervise_tunnel,
            "127.0.0.1",
            server.proxy_port,
            replace(settings, proxy_proto=TUNNEL_PROXY_PROTOCOL),
            report,
        )
        if server.shutdown_reason is not None:
            return  # closed while the tunnel was opening: no banner for a room that is gone
        banner.show(state, https=reporter.https, tcp=reporter.tcp, problems=reporter.problems)
        reporter.banner_shown = True

    await host_room(
        server,
        port,
        host,
        token=token,
        on_started=started,
        proxy_port=0 if settings is not None else None,
        fingerprint=fingerprint,
    )


async def run_tunnel(
    host: str, port: int, settings: TunnelSettings, out: TextIO = sys.stdout
) -> bool:
    """The tunnel alone, to `host:port`, until SIGTERM/Ctrl-C. False if it gave up.

    Both endpoints go to `host:port`: HTTP for the HTTPS one, bytes (after a PROXY header if
    `settings.proxy_proto`) for the TCP one; so point it at the room's loopback listener.
    """

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    gave_up = False
    reporter = TunnelReporter(say, settings.verbose)
    reporter.banner_shown = True  # no banner here: every line is said as it happens
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals, lambda reason: stop.set())

        async def supervise() -> None:
            nonlocal gave_up
            await supervise_tunnel(host, port, settings, reporter)
            gave_up = True
            stop.set()

        nursery.start_soon(supervise)
        await stop.wait()
        nursery.cancel_scope.cancel()
    return not gave_up
