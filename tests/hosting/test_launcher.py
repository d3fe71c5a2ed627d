"""What `up` says: the banner, the generated password, and the tunnel's news, line by line."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pytest

from multichat.hosting import launcher
from multichat.hosting.launcher import Banner, TunnelReporter, describe, generate_password
from multichat.hosting.ngrok_errors import _FIXES, TunnelError
from multichat.hosting.process import HostError, password_from, read_password_file
from multichat.hosting.statefile import RoomState
from multichat.hosting.tunnel_supervision import (
    MAX_REOPEN_ATTEMPTS,
    TunnelClosed,
    TunnelFailed,
    TunnelLog,
    TunnelOpened,
    TunnelOpening,
    TunnelReopening,
)

# --------------------------------------------------------------------------- the password


def test_generated_passwords_read_aloud_easily() -> None:
    syllable = "(?:[bdfghjklmnprstvz][aeiou])"
    for _ in range(200):
        password = generate_password()
        assert re.fullmatch(rf"({syllable}{{2}})(-{syllable}{{2}}){{2}}", password), password


def test_generated_passwords_are_unpredictable_enough() -> None:
    per_syllable = len(launcher._CONSONANTS) * len(launcher._VOWELS)
    bits = 2 * launcher.PASSWORD_GROUPS * math.log2(per_syllable)
    assert bits >= 36, "behind a login throttle of a few tries a minute, that is centuries"
    # 1000 draws from 2**37 values: a repeat would mean the draws are not independent.
    assert len({generate_password() for _ in range(1000)}) == 1000


def test_the_password_comes_from_the_option_then_the_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from the file\nsecond line ignored\n", encoding="utf-8")
    monkeypatch.setenv("MULTICHAT_PASSWORD", "from the environment")
    assert password_from("from the option", secret, prompt=False) == "from the option"
    assert password_from(None, secret, prompt=False) == "from the file"
    assert password_from(None, None, prompt=False) == "from the environment"
    monkeypatch.delenv("MULTICHAT_PASSWORD")
    assert password_from(None, None, prompt=False) is None  # `up` generates one then


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * 5000, "too large"),
        (None, "cannot read"),
    ],
)
def test_a_bad_password_file_is_one_line(tmp_path: Path, content: bytes | None, says: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HostError, match=says) as caught:
        read_password_file(path)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- the banner


def _state(port: int = 5002, lan: list[str] | None = None) -> RoomState:
    return RoomState(pid=1, port=port, token="t", room="den", started=0.0, lan=lan or [])


def _show(banner: Banner, state: RoomState, **options: Any) -> list[str]:
    banner.show(state, **options)
    assert isinstance(banner.out, io.StringIO)
    return banner.out.getvalue().splitlines()


LINK = "https://a1b2-203-0-113-7.ngrok-free.app"
TCP = "tcp://0.tcp.ngrok.io:12345"
CARD = TunnelError("card_required", ngrok_code="ERR_NGROK_8013")


def test_banner_leads_with_the_link_for_browsers() -> None:
    banner = Banner("den", out=io.StringIO(), password="tavo-mire-kuna")
    lines = _show(banner, _state(lan=["192.168.1.20", "10.0.0.5"]), https=LINK, tcp=TCP)
    assert lines[0] == lines[-1] == "-" * 64
    assert lines[1:9] == [
        "  multichat room 'den' is up",
        "  Password: tavo-mire-kuna   (generated: share it with your friends)",
        "",
        f"  Open in a browser: {LINK}",
        "  Or in a terminal:",
        f"    multichat connect {LINK}",
        f"    multichat connect {TCP}",
        "    multichat connect 192.168.1.20   (same network)",  # the default port goes unsaid
    ]
    assert lines[9] == "    multichat connect 10.0.0.5   (same network)"
    assert "nc HOST PORT" in lines[10]
    addresses = [line for line in lines if re.match(r"  (Public|TCP|LAN): ", line)]
    assert addresses == [
        f"  Public:   {LINK}",
        f"  TCP:      {TCP}",
        "  LAN:      192.168.1.20:5002",
        "  LAN:      10.0.0.5:5002",
    ]
    assert not any(line.startswith("  !") for line in lines)
    assert "multichat down" in lines[-2]


def test_banner_when_tcp_needs_a_card_says_so_in_one_line() -> None:
    banner = Banner("den", out=io.StringIO())
    problem = f"No TCP address: {describe(CARD)}"
    lines = _show(banner, _state(lan=["192.168.1.20"]), https=LINK, problems=[problem])
    assert lines[3:6] == [
        f"  Open in a browser: {LINK}",
        "  Or in a terminal:",
        f"    multichat connect {LINK}",
    ]
    assert f"  Public:   {LINK}" in lines
    warnings = [line for line in lines if line.startswith("  !")]
    assert warnings == [f"  ! {problem}"]
    assert "card on file" in problem and "HTTPS anyway" in problem and "ERR_NGROK_8013" in problem
    assert not any("tcp://" in line or line.startswith("  TCP:") for line in lines)


def test_banner_when_the_tunnel_failed() -> None:
    banner = Banner("den", out=io.StringIO())
    lines = _show(banner, _state(6000, ["192.168.1.20"]), problems=["Public tunnel failed: why"])
    assert "  Public:   not available" in lines
    assert "  ! Public tunnel failed: why" in lines
    assert not any("Password" in line for line in lines), "a chosen password is not shown"
    assert not any("browser" in line for line in lines)
    assert "  Friends join with:" in lines
    assert "    multichat connect 192.168.1.20:6000   (same network)" in lines
    assert not any("tcp://" in line or "https://" in line for line in lines)


def test_banner_without_a_tunnel_or_a_lan() -> None:
    banner = Banner("den", out=io.StringIO())
    lines = _show(banner, _state(6000), tunnel=False)
    assert "  Public:   none (--no-tunnel): only your own network can join" in lines
    assert "    multichat connect 127.0.0.1:6000   (this machine only)" in lines


def test_banner_for_a_loopback_or_ipv6_host() -> None:
    banner = Banner("den", out=io.StringIO())
    lines = _show(banner, _state(6000, ["::1"]))
    assert "  LAN:      [::1]:6000" in lines
    assert "    multichat connect [::1]:6000   (this machine only)" in lines
    banner = Banner("den", out=io.StringIO())
    lines = _show(banner, _state(5002, ["fe80::1"]))
    assert "  LAN:      [fe80::1]:5002" in lines
    assert "    multichat connect [fe80::1]   (same network)" in lines


# --------------------------------------------------------------------------- the tunnel's news


@pytest.mark.parametrize("code", sorted(_FIXES))
def test_every_tunnel_error_is_one_line_naming_its_fix_once(code: str) -> None:
    for error in (TunnelError(code), TunnelError(code, ngrok_code="ERR_NGROK_4018")):
        line = describe(error)
        assert "\n" not in line
        assert error.fix in line
        assert line.count(str(error).removesuffix(" (ERR_NGROK_4018)")) == 1, line
        assert line.count("ERR_NGROK_") == (1 if error.ngrok_code else 0)


def test_describe_keeps_a_specific_cause() -> None:
    line = describe(TunnelError("binary_missing", "no ngrok agent at /opt/ngrok"))
    assert line.startswith("no ngrok agent at /opt/ngrok. Fix: ")
    assert "--ngrok-path" in line


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


LINK1, LINK2 = "https://1111.ngrok-free.app", "https://2222.ngrok-free.app"
TCP1, TCP2 = "tcp://0.tcp.ngrok.io:1111", "tcp://2.tcp.ngrok.io:2222"


class Addresses:
    """An `on_address` callback: what the state file would record, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str | None]] = []

    def __call__(self, https: str | None, tcp: str | None) -> None:
        self.seen.append((https, tcp))


def test_reporter_before_the_banner_only_takes_notes() -> None:
    say = Lines()
    addresses = Addresses()
    reporter = TunnelReporter(say, verbose=False)
    reporter.on_address = addresses
    reporter(TunnelOpening(0))
    assert say.take() == ["Opening the public ngrok tunnel (up to 30 s)..."]
    reporter(TunnelLog("t=... lvl=info msg=hello"))
    reporter(TunnelOpened(LINK1, TCP1))
    assert say.take() == []
    assert (reporter.https, reporter.tcp, reporter.problems) == (LINK1, TCP1, [])
    assert addresses.seen == [(LINK1, TCP1)]


def test_reporter_notes_a_refused_tcp_address_for_the_banner() -> None:
    say = Lines()
    reporter = TunnelReporter(say, verbose=False)
    reporter(TunnelOpening(0))
    reporter(TunnelOpened(LINK1, None, CARD))
    assert say.take() == ["Opening the public ngrok tunnel (up to 30 s)..."]
    assert (reporter.https, reporter.tcp) == (LINK1, None)
    assert reporter.problems == [f"No TCP address: {describe(CARD)}"]


def test_reporter_notes_a_failure_and_the_retry_for_the_banner() -> None:
    say = Lines()
    reporter = TunnelReporter(say, verbose=False)
    reporter(TunnelOpening(0))
    reporter(TunnelFailed(TunnelError("deadline")))
    reporter(TunnelReopening(1, 1.0))
    say.take()
    assert reporter.https is None
    assert reporter.problems == [
        f"Public tunnel failed: {describe(TunnelError('deadline'))} "
        f"(trying again in 1 s, attempt 1 of {MAX_REOPEN_ATTEMPTS})"
    ]


def test_reporter_after_the_banner_tells_each_change() -> None:
    say = Lines()
    addresses = Addresses()
    reporter = TunnelReporter(say, verbose=True)
    reporter.on_address = addresses
    reporter(TunnelOpening(0))
    reporter(TunnelOpened(LINK1, TCP1))
    reporter.banner_shown = True
    say.take()

    died = TunnelError("agent_died", "the ngrok agent exited with status 1")
    reporter(TunnelFailed(died))
    assert say.take() == [f"The public tunnel closed: {describe(died)}"]
    reporter(TunnelReopening(1, 1.0))
    assert say.take() == [f"Trying again in 1 s, attempt 1 of {MAX_REOPEN_ATTEMPTS}..."]
    reporter(TunnelOpening(1))
    reporter(TunnelLog("lvl=info msg=started"))
    assert say.take() == ["ngrok: lvl=info msg=started"]
    reporter(TunnelOpened(LINK2, TCP2))
    assert say.take() == [
        "The tunnel is open again, at new addresses:",
        f"Open in a browser: {LINK2}",
        f"Friends join with: multichat connect {LINK2}",
        f"TCP address: {TCP2}",
    ]
    assert addresses.seen == [(LINK1, TCP1), (None, None), (LINK2, TCP2)]
    assert reporter.problems == []
    reporter(TunnelClosed())  # the room closed: nothing to say
    assert say.take() == []


def test_reporter_keeps_the_card_note_across_a_reopen_that_does_not_ask_again() -> None:
    say = Lines()
    reporter = TunnelReporter(say, verbose=False)
    reporter.banner_shown = True  # as `multichat tunnel` runs it
    reporter(TunnelOpened(LINK1, None, CARD))
    assert say.take() == [
        f"Open in a browser: {LINK1}",
        f"Friends join with: multichat connect {LINK1}",
        f"No TCP address: {describe(CARD)}",
    ]
    reporter(TunnelFailed(TunnelError("agent_died")))
    reporter(TunnelOpened(LINK2))  # the supervisor no longer asks for TCP: nothing to repeat
    assert say.take()[1:] == [
        "The tunnel is open again, at new addresses:",
        f"Open in a browser: {LINK2}",
        f"Friends join with: multichat connect {LINK2}",
    ]
    assert reporter.problems == [f"No TCP address: {describe(CARD)}"]


def test_reporter_says_when_it_gives_up() -> None:
    say = Lines()
    reporter = TunnelReporter(say, verbose=False)
    reporter.banner_shown = True  # as `multichat tunnel` runs it
    reporter(TunnelOpening(0))
    reporter(TunnelLog("not shown without --verbose"))
    reporter(TunnelOpened(LINK1, TCP1))
    assert say.take()[1:] == [
        f"Open in a browser: {LINK1}",
        f"Friends join with: multichat connect {LINK1}",
        f"TCP address: {TCP1}",
    ]
    error = TunnelError("bad_authtoken", ngrok_code="ERR_NGROK_105")
    reporter(TunnelFailed(error))
    reporter(TunnelClosed())
    assert say.take() == [
        f"The public tunnel closed: {describe(error)}",
        "Gave up on the public tunnel: fix the above, then start again.",
    ]
