"""The whole way in for a friend: the link `multichat up` prints, opened in a real browser.

`multichat up` runs as the host runs it, with the stand-in ngrok agent (tests/ngrok_standin)
in place of ngrok's: its HTTPS link is `https://localhost:PORT`, with a certificate from a test
CA. Debian's Chromium trusts that CA as a person's machine would trust one it was told to (in
the NSS database of its home; no switch turns certificate checks off), opens the link, meets
ngrok's free-plan browser warning and clicks its "Visit Site" button, as a person would. Then
the room's own page: two people in two browsers and one in a terminal (a JSON-lines peer on the
room's LAN port) chat; a wrong password is told; HTML and escape sequences stay text; the host's
`multichat down` reaches every browser. Every address is on this machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect
from playwright.sync_api import Error as PlaywrightError

import ngrok_standin
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MULTICHAT,
    PASSWORD,
    RELAXED_LIMITS,
    STEP,
    STEP_MS,
    TerminalMember,
    chromium,
    log_in,
    open_tab,
    say,
    write_config,
)
from multichat.hosting.lan import lan_addresses
from multichat.protocol.events import Message, Shutdown
from multichat.protocol.sanitize import clean_text

PHONE = (390, 844)
# Looks like a real one; the stand-in accepts any.
AUTHTOKEN = "2qUpTestAuthtoken_7hJk3WxQ9pLmR4tZ"
# The banner is complete once its closing rule is out.
_BANNER = re.compile(r"Close the room:.*\n-+\n")
_LINK = re.compile(r"^  Open in a browser: (https://\S+)$", re.MULTILINE)
_LAN = re.compile(r"^  LAN: +(\S+):\d+$", re.MULTILINE)
NASTY = (
    "<img src=x onerror=alert(1)><script>window.pwned = 1</script>"
    "\x1b[31mred\x1b[0m \u202eevil <b>bold</b> &amp; \x1b]0;title\x07"
)
expect.set_options(timeout=STEP_MS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    """`multichat up` in a subprocess, and what its banner says."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    tls: ngrok_standin.StandinTLS
    out: list[str] = field(default_factory=list)  # stdout: the banner
    err: list[str] = field(default_factory=list)  # stderr: the log
    link: str = ""
    lan: list[str] = field(default_factory=list)

    def printed(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def lan_host(self) -> str:
        """A LAN address from the banner that is this machine's own, else 127.0.0.1."""
        own = set(lan_addresses())
        return next((address for address in self.lan if address in own), "127.0.0.1")

    def down(self, reason: str) -> subprocess.CompletedProcess[str]:
        """`multichat down --reason REASON`, as the host types it in another terminal."""
        return subprocess.run(
            [str(MULTICHAT), "down", "--reason", reason],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STEP,
            check=False,
        )


@contextmanager
def host_up(tmp: Path, limits: dict[str, float] = RELAXED_LIMITS) -> Iterator[Up]:
    """`multichat up` with the stand-in agent, everything it keeps inside `tmp`, and `limits`
    in its config; once its banner is out. Afterwards, it and its agent are killed if still
    running (those pids only)."""
    (tmp / "home").mkdir()
    tls = ngrok_standin.make_tls(tmp)
    agents = tmp / "agent.state"
    drop = ("NGROK_", "PYNGROK_", "STANDIN_NGROK_", "MULTICHAT_")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(drop) and "PROXY" not in key.upper()
    }
    env.update(
        HOME=str(tmp / "home"),
        XDG_CONFIG_HOME=str(tmp / "home" / ".config"),
        MULTICHAT_STATE_DIR=str(tmp / "state"),
        NGROK_AUTHTOKEN=AUTHTOKEN,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        STANDIN_NGROK_STATE=str(agents),
        STANDIN_NGROK_LIFETIME="300",
        **tls.env(),
    )
    # Every friend here comes from 127.0.0.1, through the tunnel or not: by default, lift the
    # per-source and flood limits, and only those.
    config = write_config(tmp / "room.toml", limits, {})
    port = free_port()
    command = [str(MULTICHAT), "up", "--port", str(port), "--password", PASSWORD]
    command += ["--room", "friends", "--config", str(config), "--data-dir", str(tmp / "data")]
    command += ["--no-qr", "--ngrok-path", ngrok_standin.ngrok_path()]
    command += ["--ngrok-config", str(ngrok_standin.write_config(tmp))]
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    up = Up(process, env, port, tls)
    banner = threading.Event()

    def read(stream: IO[bytes], lines: list[str], watch: bool) -> None:
        for raw in stream:  # ends when the process does
            lines.append(raw.decode(errors="replace"))
            if watch and _BANNER.search("".join(lines)):
                banner.set()
        banner.set()

    readers = [
        threading.Thread(target=read, args=(process.stdout, up.out, True), daemon=True),
        threading.Thread(target=read, args=(process.stderr, up.err, False), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        assert banner.wait(3 * STEP), up.printed() or "`multichat up` printed nothing"
        text = "".join(up.out)
        link = _LINK.search(text)
        assert link is not None and _BANNER.search(text), up.printed()
        up.link = link.group(1)
        up.lan = _LAN.findall(text)
        yield up
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(STEP)
        ngrok_standin.kill_agents(agents)
        for reader in readers:
            reader.join(STEP)
    assert AUTHTOKEN not in up.printed(), "the authtoken was printed"
    assert "Traceback" not in up.printed(), up.printed()


def visit_site(page: Page, link: str) -> None:
    """On ngrok's browser warning, which the link opens to first, click "Visit Site"."""
    expect(page).to_have_title("ngrok - Visit Site")
    host = link.removeprefix("https://")
    expect(page.get_by_role("heading", name=f"You are about to visit: {host}")).to_be_visible()
    page.get_by_role("button", name="Visit Site").click()
    expect(page.get_by_role("heading", name="Join the chat room")).to_be_visible()
    # The form shows before its scripts run (modules load after the HTML): wait for them, as
    # `goto` does, or Enter submits the bare form instead of logging in.
    page.wait_for_load_state("load")
    assert page.url == f"{link}/"


def message_texts(page: Page) -> list[str]:
    return page.locator("#messages .message .body").all_text_contents()


def refused_without_the_ca(browser: Browser, home: Path, link: str) -> None:
    """Another Chromium, whose home knows no test CA, refuses the link: the certificate is
    checked for real."""
    home.mkdir()
    stranger = browser.browser_type.launch(
        executable_path=str(CHROMIUM),
        args=list(CHROMIUM_ARGS),
        env={**os.environ, "HOME": str(home)},
    )
    try:
        page = stranger.new_page()
        with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(link)
    finally:
        stranger.close()


def test_one_friends_browser_loads_the_link_under_the_default_per_source_limits(
    tmp_path: Path,
) -> None:
    # Through the tunnel each request's source is its X-Forwarded-For, so a browser fetching
    # the page's files at once is one address with several connections, as on a LAN.
    with (
        host_up(tmp_path, limits={}) as up,
        chromium(trust=up.tls.ca_file) as browser,
        open_tab(browser, up.link) as tab,
    ):
        try:
            visit_site(tab.page, up.link)
            tab.check()  # every file of the page came
            log_in(tab.page, "alice")
        except PlaywrightError as exc:  # what the room logged says more than a timeout
            raise AssertionError(f"{exc}\n{tab.problems}\n{up.printed()}") from exc
        carol = TerminalMember(up.port, "carol", host=up.lan_host())
        say(tab.page, "hello through the tunnel")
        heard = carol.wait_for(Message)
        assert (heard.sender, heard.text) == ("alice", "hello through the tunnel")
        carol.close()


def test_friends_open_the_printed_link_in_a_browser_and_chat_through_the_tunnel(
    tmp_path: Path,
) -> None:
    with host_up(tmp_path) as up, chromium(trust=up.tls.ca_file) as browser:
        assert re.fullmatch(r"https://localhost:\d+", up.link), up.link
        refused_without_the_ca(browser, tmp_path / "stranger", up.link)
        sockets: list[str] = []
        dialogs: list[str] = []

        def watch(tab_page: Page) -> None:
            tab_page.on("websocket", lambda socket: sockets.append(socket.url))

            def dialog(opened: Dialog) -> None:  # alert(), which injected markup would call
                dialogs.append(opened.message)
                opened.dismiss()

            tab_page.on("dialog", dialog)

        desk = open_tab(browser, up.link)
        phone = open_tab(browser, up.link, viewport=PHONE, is_mobile=True, has_touch=True)
        with desk as first, phone as second:
            alice, bob = first.page, second.page
            for page in (alice, bob):
                watch(page)
                visit_site(page, up.link)  # each browser meets the warning once

            # A wrong password is told beside the form, which stays usable.
            alice.get_by_label("Room password").fill("not the password")
            alice.get_by_label("Your name").fill("alice")
            alice.get_by_label("Your name").press("Enter")
            expect(alice.locator("#login-error")).to_have_text("wrong password")
            expect(alice.get_by_label("Room password")).to_be_focused()
            log_in(alice, "alice")
            log_in(bob, "bob")
            carol = TerminalMember(up.port, "carol", host=up.lan_host())
            expect(alice.locator("#members li")).to_have_text(["alice (you)", "bob", "carol"])
            assert sockets and all(url == f"wss://{up.link[8:]}/ws" for url in sockets)

            say(alice, "hello from a desk")
            say(bob, "hello from a phone")
            carol.say("hello from a terminal")
            heard = [carol.wait_for(Message) for _ in range(3)]
            assert sorted((m.sender, m.text) for m in heard) == [
                ("alice", "hello from a desk"),
                ("bob", "hello from a phone"),
                ("carol", "hello from a terminal"),
            ]
            room_order = [f"{m.sender}: {m.text}" for m in heard]
            for page in (alice, bob):
                expect(page.locator("#messages .message.sent")).to_have_count(1)
                expect(page.locator("#messages .message .body")).to_have_count(3)
                shown = [text.removesuffix(" ✓") for text in message_texts(page)]
                assert sorted(shown) == sorted(room_order)

            # Markup and escape sequences from anyone are shown as the text they are.
            carol.say(NASTY)
            say(bob, NASTY)
            cleaned = clean_text(NASTY)
            nasty = [carol.wait_for(Message, lambda m: m.text == cleaned) for _ in range(2)]
            assert sorted(m.sender for m in nasty) == ["bob", "carol"]
            for page in (alice, bob):
                expect(page.locator("#messages .message .text")).to_have_count(5)
                texts = page.locator("#messages .message .text").all_text_contents()
                assert texts[3:] == [cleaned, cleaned]
                assert page.locator("img, b, #messages script").count() == 0
                assert page.evaluate("window.pwned") is None
            assert not dialogs

            # The host closes the room from another terminal: everyone is told why.
            down = up.down("the tunnel test is over")
            assert down.returncode == 0, down
            assert carol.wait_for(Shutdown) == Shutdown("the tunnel test is over")
            for page in (alice, bob):
                expect(page.locator("#messages .shutdown .body")).to_have_text(
                    "The room is closing: the tunnel test is over"
                )
                expect(page.locator("#state")).to_have_text("room closed")
                expect(page.get_by_role("button", name="Join again")).to_be_visible()
            carol.close()
        assert up.process.wait(STEP) == 0, up.printed()
