"""A real browser, a real room and a terminal member, for the tests of the browser page.

The browser is Debian's Chromium (`apt-get install chromium chromium-driver`, which
`scripts/test` does when it is missing) driven by playwright's sync API; nothing is ever
downloaded (`playwright install` is never run). The room is `multichat serve` in a subprocess on
a loopback port the kernel picks, the terminal member a blocking socket speaking JSON lines
through the project's own sans-I/O `ClientConnection`. Every wait is bounded.

The helpers take the room's base URL, so a test can point the same page at the room directly or
through a tunnel in front of it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from multichat.protocol.connection import ClientConnection
from multichat.protocol.events import ConnectionClosed, Event, Hello, NeedData, Say, Welcome

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
T = TypeVar("T")


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under playwright, closed afterwards."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(scripts/test installs it when run as root: "
            "apt-get install -y --no-install-recommends chromium chromium-driver)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page in a browser context of its own (own cookies, own socket): one person."""

    page: Page
    problems: list[str] = field(default_factory=list)  # uncaught errors, CSP refusals

    def check(self) -> None:
        """Fail on anything the page got wrong: an exception, or something the CSP refused."""
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

        page.on("console", console)
        page.goto(url)
        yield tab
        tab.check()
    finally:
        ctx.close()


def log_in(page: Page, name: str, password: str = PASSWORD) -> None:
    """Fill the form as a person would and press Enter; return once the room shows."""
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> int:
        """SIGTERM, as the host's Ctrl-C or `multichat down` does; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STEP)


@contextmanager
def serve_room(
    state_dir: Path, *, password: str = PASSWORD, room: str = "friends", **limits: float
) -> Iterator[Room]:
    """A room on a loopback port the kernel picks; killed (this process only) when done."""
    config = state_dir / "limits.toml"
    table = RELAXED_LIMITS | limits
    config.write_text("[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in table.items()))
    env = os.environ | {"MULTICHAT_PASSWORD": password, "MULTICHAT_STATE_DIR": str(state_dir)}
    command = [str(MULTICHAT), "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--room", room, "--config", str(config)]
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
                started.set()
        started.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        assert started.wait(STEP) and ports, "".join(log) or "the room did not start"
        yield Room(process, ports[0], log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(STEP)
        reader.join(STEP)
    assert not any("Traceback" in line for line in log), "".join(log)


# -- a member in a terminal: JSON lines over TCP --


class TerminalMember:
    """One member on the terminal protocol, blocking; every read waits `STEP` at most."""

    def __init__(self, port: int, name: str, password: str = PASSWORD) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
        self.conn = ClientConnection()
        self.events: list[Event] = []  # everything received, in order
        self.send(Hello(name, password))
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
