"""A real browser, a real room and a terminal member, for the tests of the browser page.

The browser is Debian's Chromium (`apt-get install chromium chromium-driver`, which
`scripts/test` does when it is missing) driven by playwright's sync API; nothing is ever
downloaded (`playwright install` is never run). The room is `multichat serve` in a subprocess on
a loopback port the kernel picks, the terminal member a blocking socket speaking JSON lines
through the project's own sans-I/O `ClientConnection`. Every wait is bounded.

The helpers take the room's base URL, so a test can point the same page at the room directly or
through a tunnel in front of it. A tunnel's HTTPS link has a certificate from a test CA, which
`chromium(trust=...)` makes the browser trust the way a person's machine trusts a CA it was told
to: in the NSS database of its home directory (a temporary one here), with no switch that turns
certificate checks off.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright

from multichat.protocol.connection import ClientConnection
from multichat.protocol.events import (
    ConnectionClosed,
    Control,
    Event,
    Hello,
    NeedData,
    Say,
    Welcome,
)

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: no GPU, no QUIC, and none of the background requests (updates, sync,
# field trials) a first run makes, so the only traffic is the test's own, to 127.0.0.1.
# --no-sandbox because the test command runs as root in CI, where Chromium's sandbox refuses.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
MULTICHAT = Path(sys.executable).parent / "multichat"
PASSWORD = "correct horse"
# Any one step (a page load, a message arriving) takes well under a second; this is the cap on
# a busy two-core machine.
STEP = 15.0
STEP_MS = STEP * 1000
# Every client is 127.0.0.1: lift the per-source and flood limits, and only those.
RELAXED_LIMITS = {
    "connections_per_source": 100_000,
    "unauthenticated_per_source": 100_000,
    "unauthenticated_total": 100_000,
    "flood_per_second": 0,
    "failed_passwords_per_minute": 1000,
    "failed_passwords_global_per_minute": 1000,
}
_SERVING = re.compile(r"serving room .* on port (\d+)")
# The last line `serve` prints as it starts (docs/invites.md), once its state file is written.
_ANNOUNCED = re.compile(r"^Certificate: SHA-256 ")
T = TypeVar("T")


@contextmanager
def chromium(*, trust: Path | None = None) -> Iterator[Browser]:
    """Debian's Chromium under playwright, closed afterwards.

    With `trust` (a CA certificate, PEM), the browser trusts that CA for HTTPS, besides the
    usual ones: it runs with a home directory of its own whose NSS database holds the CA.
    """
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(scripts/test installs it when run as root: "
            "apt-get install -y --no-install-recommends chromium chromium-driver)"
        )
    with ExitStack() as stack:
        env = None
        if trust is not None:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="chromium-home-"))
            trust_ca(Path(home) / ".pki" / "nssdb", trust)
            env = {**os.environ, "HOME": home}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), timeout=60_000, env=env
            )
            try:
                yield browser
            finally:
                browser.close()


# -- a CA that Chromium trusts: NSS, which Chromium on Linux reads its users' CAs from --

# certdb.h: the trust flags of `certutil -t "C,,"`, a CA trusted to issue server certificates.
CERTDB_VALID_CA = 1 << 3
CERTDB_TRUSTED_CA = 1 << 4


class _SECItem(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("data", ctypes.c_void_p), ("len", ctypes.c_uint)]


class _CERTCertTrust(ctypes.Structure):
    _fields_ = [
        ("sslFlags", ctypes.c_uint),
        ("emailFlags", ctypes.c_uint),
        ("objectSigningFlags", ctypes.c_uint),
    ]


def trust_ca(nssdb: Path, ca_file: Path) -> None:
    """A new NSS database in `nssdb` in which the CA in `ca_file` is trusted for TLS servers.

    What `certutil -N --empty-password` and `certutil -A -t C,,` do, through libnss3 itself,
    which Chromium depends on: so no package beyond Chromium's own is needed. Run in a child
    process, so that NSS's global state never lives in the test run.
    """
    nssdb.mkdir(parents=True, exist_ok=True)
    script = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import browser; "
    script += "browser._trust_ca_here(sys.argv[1], sys.argv[2])"
    done = subprocess.run(
        [sys.executable, "-c", script, str(nssdb), str(ca_file)],
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 0, f"could not make NSS trust the test CA:\n{done.stderr}"


def _trust_ca_here(nssdb: str, ca_file: str) -> None:
    nss = ctypes.CDLL("libnss3.so")
    handle, slot, cert = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
    nss.CERT_GetDefaultCertDB.restype = handle
    nss.PK11_GetInternalKeySlot.restype = slot
    nss.PK11_NeedUserInit.argtypes = [slot]
    nss.PK11_InitPin.argtypes = [slot, ctypes.c_char_p, ctypes.c_char_p]
    nss.CERT_NewTempCertificate.restype = cert
    nss.CERT_NewTempCertificate.argtypes = [
        handle,
        ctypes.POINTER(_SECItem),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    nss.PK11_ImportCert.argtypes = [slot, cert, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    nss.CERT_ChangeCertTrust.argtypes = [handle, cert, ctypes.POINTER(_CERTCertTrust)]
    nss.CERT_DestroyCertificate.argtypes = [cert]
    nss.PK11_FreeSlot.argtypes = [slot]

    def check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed: NSS error {nss.PORT_GetError()}")

    check(nss.NSS_InitReadWrite(f"sql:{nssdb}".encode()), "NSS_InitReadWrite")
    try:
        key_slot = nss.PK11_GetInternalKeySlot()
        if nss.PK11_NeedUserInit(key_slot):
            check(nss.PK11_InitPin(key_slot, None, b""), "PK11_InitPin")  # no password
        der = ssl.PEM_cert_to_DER_cert(Path(ca_file).read_text(encoding="ascii"))
        data = ctypes.create_string_buffer(der, len(der))
        item = _SECItem(0, ctypes.cast(data, ctypes.c_void_p), len(der))
        db = nss.CERT_GetDefaultCertDB()
        ca = nss.CERT_NewTempCertificate(db, ctypes.byref(item), None, 0, 1)
        if not ca:
            raise RuntimeError(f"not a certificate: NSS error {nss.PORT_GetError()}")
        check(nss.PK11_ImportCert(key_slot, ca, 0, b"multichat test CA", 0), "PK11_ImportCert")
        trust = _CERTCertTrust(CERTDB_VALID_CA | CERTDB_TRUSTED_CA, 0, 0)
        check(nss.CERT_ChangeCertTrust(db, ca, ctypes.byref(trust)), "CERT_ChangeCertTrust")
        nss.CERT_DestroyCertificate(ca)
        nss.PK11_FreeSlot(key_slot)
    finally:
        check(nss.NSS_Shutdown(), "NSS_Shutdown")


@dataclass
class Tab:
    """A page in a browser context of its own (own cookies, own socket): one person."""

    page: Page
    problems: list[str] = field(default_factory=list)  # uncaught errors, CSP, files not loaded

    def check(self) -> None:
        """Fail on anything the page got wrong: an exception, something the CSP refused, or a
        file of its own that did not load."""
        assert not self.problems, self.problems


@contextmanager
def open_tab(
    browser: Browser,
    url: str,
    *,
    viewport: tuple[int, int] = (1280, 800),
    fake_clock: bool = False,
    **context: object,
) -> Iterator[Tab]:
    """`url` in a fresh context; afterwards, fails the test if the page broke or broke the CSP.

    With `fake_clock` the page's clock can be paused (`page.clock.pause_at`), and then its
    timers run only when the test says (`page.clock.run_for`).
    """
    width, height = viewport
    ctx = browser.new_context(viewport={"width": width, "height": height}, **context)  # type: ignore[arg-type]
    ctx.set_default_timeout(STEP_MS)
    try:
        page = ctx.new_page()
        if fake_clock:
            page.clock.install()
        tab = Tab(page)
        page.on("pageerror", lambda error: tab.problems.append(f"uncaught: {error}"))

        def console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                tab.problems.append(f"CSP: {message.text}")

        def failed(request: Request) -> None:
            # A file of the page that did not come (a refused connection, say) leaves it
            # broken; a WebSocket that fails is the page's to handle, and tests do break them.
            if request.resource_type != "websocket":
                tab.problems.append(f"not loaded: {request.url} ({request.failure})")

        page.on("console", console)
        page.on("requestfailed", failed)
        page.goto(url)
        yield tab
        tab.check()
    finally:
        ctx.close()


def log_in(page: Page, name: str, password: str = PASSWORD) -> None:
    """Fill the form as a person would and press Enter once the page's script has the form
    (Join is disabled until then); return once the room shows."""
    expect(page.get_by_role("button", name="Join")).to_be_enabled(timeout=STEP_MS)
    page.get_by_label("Room password").fill(password)
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Your name").press("Enter")
    page.locator("#chat").wait_for(state="visible")


def say(page: Page, text: str) -> None:
    """Type `text` in the message box and press Enter."""
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


# -- the room --


@dataclass
class Room:
    """`multichat serve` in a subprocess; `url` is its page."""

    process: subprocess.Popen[bytes]
    port: int
    log: list[str]
    state_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> int:
        """SIGTERM, as the host's Ctrl-C or `multichat down` does; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STEP)

    def control(self, command: str, *args: str) -> Event | ConnectionClosed:
        """The room's answer to a host's command (`op alice`, `invite uses=1`), proven by the
        control token in its state file, as `multichat kick` and `multichat invite` do it."""
        return control(self.port, self.state_dir, command, *args)


def control(port: int, state_dir: Path, command: str, *args: str) -> Event | ConnectionClosed:
    """A control command to the room on `port` whose state file is in `state_dir`."""
    state = json.loads((state_dir / f"room-{port}.json").read_text(encoding="utf-8"))
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as sock:
        conn = ClientConnection()
        sock.sendall(conn.send(Control(state["token"], command, "", args)))
        while isinstance(event := conn.next_event(), NeedData):
            conn.receive_data(sock.recv(65536))
        return event


def write_config(path: Path, limits: dict[str, float], history: dict[str, float]) -> Path:
    """A room's TOML config: its `[limits]` (and `[history]`, where `resume_max` is read)."""
    text = "[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in limits.items())
    text += "[history]\n" + "".join(f"{k} = {v!r}\n" for k, v in history.items())
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def serve_room(
    state_dir: Path,
    *,
    password: str = PASSWORD,
    room: str = "friends",
    rooms: tuple[str, ...] = (),
    history: dict[str, float] | None = None,
    **limits: float,
) -> Iterator[Room]:
    """A room on a loopback port the kernel picks; killed (this process only) when done.

    Its data (history, certificate) is kept in `state_dir` too: every test has a room of its
    own, whatever it is called.
    """
    config = write_config(state_dir / "room.toml", RELAXED_LIMITS | limits, history or {})
    env = os.environ | {"MULTICHAT_PASSWORD": password, "MULTICHAT_STATE_DIR": str(state_dir)}
    command = [str(MULTICHAT), "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--room", room, "--config", str(config), "--data-dir", str(state_dir / "data")]
    command += [word for more in rooms for word in ("--room", more)]
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log: list[str] = []
    ports: list[int] = []
    started = threading.Event()

    def read_log() -> None:
        assert process.stderr is not None
        for raw in process.stderr:  # ends when the process does
            line = raw.decode(errors="replace")
            log.append(line)
            if not ports and (match := _SERVING.search(line)):
                ports.append(int(match.group(1)))
            if ports and _ANNOUNCED.match(line):
                started.set()
        started.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        assert started.wait(STEP) and ports, "".join(log) or "the room did not start"
        yield Room(process, ports[0], log, state_dir)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(STEP)
        reader.join(STEP)
    assert not any("Traceback" in line for line in log), "".join(log)


# -- a member in a terminal: JSON lines over TCP --


class TerminalMember:
    """One member on the terminal protocol, blocking; every read waits `STEP` at most."""

    def __init__(
        self,
        port: int,
        name: str,
        password: str = PASSWORD,
        host: str = "127.0.0.1",
        room: str | None = None,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=STEP)
        self.conn = ClientConnection()
        self.events: list[Event] = []  # everything received, in order
        self.send(Hello(name, password, room=room))
        welcome = self.next_event()
        assert isinstance(welcome, Welcome), welcome
        self.welcome = welcome

    def send(self, event: Event) -> None:
        self.sock.sendall(self.conn.send(event))

    def say(self, text: str, id: str | None = None) -> None:
        self.send(Say(text, id))

    def next_event(self) -> Event | ConnectionClosed:
        while isinstance(event := self.conn.next_event(), NeedData):
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.conn.receive_data(data)
        if not isinstance(event, ConnectionClosed):
            self.events.append(event)
        return event

    def wait_for(self, kind: type[T], done: Callable[[T], bool] = lambda _: True) -> T:
        """Read until an event of `kind` for which `done` holds; fails if the room closes first."""
        while True:
            event = self.next_event()
            assert not isinstance(event, ConnectionClosed), f"closed; got {self.events}"
            if isinstance(event, kind) and done(event):
                return event

    def close(self) -> None:
        self.sock.close()
