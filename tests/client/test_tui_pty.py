"""The real terminal client in pseudo-terminals, against a real `multichat serve` subprocess.

What the client writes to its terminal is fed to a terminal emulator (urwid's own `vterm`), so
the tests read the screen a person would see, and can tell whether anything from the network
managed to retitle it or leave the alternate screen behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pexpect
import pytest
import urwid.vterm as vterm

from multichat.protocol import wire
from multichat.protocol.events import Hello, Say

PASSWORD = "pty test password"
ROWS, COLS = 24, 80
# Starting a Python process and drawing the first screen; generous for a loaded machine.
WAIT_SECONDS = 15.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pexpect needs a POSIX pty")


class Emulator:
    """Just enough of urwid's Terminal widget for a TermCanvas: it records what it is asked."""

    def __init__(self) -> None:
        self.term_modes = vterm.TermModes()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        def record(*args: object, **kwargs: object) -> None:
            self.calls.append(name)

        return record


class Tty:
    """One client process in a pseudo-terminal, and the screen it has drawn."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.emulator = Emulator()
        self.screen = vterm.TermCanvas(COLS, ROWS, self.emulator)  # type: ignore[arg-type]
        self.raw = bytearray()  # every byte the client wrote to its terminal
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "multichat", *args],
            env=env,
            dimensions=(ROWS, COLS),
            timeout=WAIT_SECONDS,
        )

    def pump(self) -> bool:
        """Feed what the client wrote to the emulator; False once it has exited."""
        try:
            data = self.child.read_nonblocking(65536, timeout=0.05)
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        self.raw += data
        self.screen.addstr(data)
        return True

    def lines(self) -> list[str]:
        return [row.decode("utf-8", "replace").rstrip() for row in self.screen.text]

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, needle: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while needle not in self.text():
            if not self.pump() or time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not on screen:\n{self.text()}")

    def type(self, text: str) -> None:
        self.child.send(text)

    def wait_exit(self) -> int:
        deadline = time.monotonic() + WAIT_SECONDS
        while self.pump():
            if time.monotonic() > deadline:
                raise AssertionError(f"still running:\n{self.text()}")
        self.child.wait()
        status = self.child.exitstatus
        assert status is not None, f"killed by signal {self.child.signalstatus}"
        return status

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MULTICHAT_")}
    base.update(TERM="xterm", LANG="C.UTF-8", LC_ALL="C.UTF-8", **extra)
    return base


class Server:
    """`multichat serve` on a free port; a port taken between the check and the bind is retried."""

    def __init__(self, *more_rooms: str) -> None:
        log: list[bytes] = []
        for _ in range(3):
            self.port = free_port()
            serve = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--room", "pty room"]
            serve += [word for room in more_rooms for word in ("--room", room)]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "multichat", *serve],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env(MULTICHAT_PASSWORD=PASSWORD),
            )
            assert self.process.stderr is not None
            for line in self.process.stderr:  # ends if the server dies; pytest-timeout caps it
                log.append(line)
                if b"serving room" in line:
                    return
            self.process.wait()
        raise AssertionError(f"the server did not start: {b''.join(log).decode()}")

    def shutdown(self, reason: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"shutdown {reason}\n".encode())
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT_SECONDS)


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def ttys() -> Iterator[list[Tty]]:
    opened: list[Tty] = []
    try:
        yield opened
    finally:
        for tty in opened:
            tty.close()


def connect(server: Server, ttys: list[Tty], name: str, *options: str, **extra: str) -> Tty:
    tty = Tty(["connect", f"127.0.0.1:{server.port}", "--name", name, *options], env(**extra))
    ttys.append(tty)
    return tty


def say_raw(port: int, name: str, text: str) -> socket.socket:
    """A peer that speaks the protocol by hand, to send what no real client would."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    sock.sendall(wire.encode(Hello(name, PASSWORD)) + wire.encode(Say(text)))
    return sock


def test_two_people_chat(server: Server, ttys: list[Tty]) -> None:
    alice = connect(server, ttys, "alice")
    alice.child.expect_exact("Room password: ")
    alice.child.sendline(PASSWORD)
    alice.wait_for("Welcome to pty room, alice!")
    assert PASSWORD not in alice.text()
    assert alice.emulator.term_modes.alternate_screen  # type: ignore[attr-defined]

    bob = connect(server, ttys, "bob", MULTICHAT_PASSWORD=PASSWORD)
    bob.wait_for("Welcome to pty room, bob! Online: alice, bob")
    alice.wait_for("→ bob joined")
    alice.wait_for("pty room · 127.0.0.1:")
    alice.wait_for("2 online")

    alice.type("hi bob\r")
    bob.wait_for("alice: hi bob")
    alice.wait_for("alice: hi bob ✓")
    bob.type("hello alice, /who next\r")
    alice.wait_for("bob: hello alice, /who next")
    bob.type("/who\r")
    bob.wait_for("Online (2): alice, bob")

    # While bob types, a message arrives: it goes to the pane, the half-typed line stays whole.
    bob.type("half a line")
    alice.type("interrupting\r")
    bob.wait_for("alice: interrupting")
    assert bob.lines()[-1] == "bob> half a line"
    bob.type("\x15")  # Ctrl-U clears it, as in a shell

    # Escape sequences from the network are shown as text, never obeyed.
    mallory = say_raw(server.port, "mallory", "\x1b]0;pwned\x07\x1b[2J\x1b[31mgotcha\rX\u202eevil")
    alice.wait_for("mallory: ]0;pwned[2J[31mgotcha")
    mallory.close()
    assert "set_title" not in alice.emulator.calls
    assert "alice: hi bob ✓" in alice.text()  # the screen was not cleared

    bob.type("tata\r")
    assert bob.wait_exit() == 0
    assert not bob.emulator.term_modes.alternate_screen  # type: ignore[attr-defined]
    alice.wait_for("← bob left (quit)")


def test_shutdown_notice_then_terminal_restored(server: Server, ttys: list[Tty]) -> None:
    alice = connect(server, ttys, "alice", MULTICHAT_PASSWORD=PASSWORD)
    alice.wait_for("Welcome to pty room, alice!")
    server.shutdown("back after lunch")
    alice.wait_for("The room is closing: back after lunch")
    alice.wait_for("room closed - press a")  # (the emulator drops a cell near the edge)
    alice.type("x")
    assert alice.wait_exit() == 0
    assert not alice.emulator.term_modes.alternate_screen  # type: ignore[attr-defined]
    assert "The room closed: back after lunch" in alice.text()
    assert alice.emulator.term_modes.visible_cursor  # type: ignore[attr-defined]


def test_wrong_password_asks_again(server: Server, ttys: list[Tty]) -> None:
    alice = connect(server, ttys, "alice")
    alice.child.expect_exact("Room password: ")
    alice.child.sendline("not it")
    alice.child.expect_exact("Wrong password.")
    alice.child.expect_exact("Room password: ")
    alice.child.sendline(PASSWORD)
    alice.wait_for("Welcome to pty room, alice!")
    alice.type("/quit\r")
    assert alice.wait_exit() == 0


def test_resize_redraws(server: Server, ttys: list[Tty]) -> None:
    alice = connect(server, ttys, "alice", MULTICHAT_PASSWORD=PASSWORD)
    alice.wait_for("Welcome to pty room, alice!")
    alice.screen.resize(50, 12)
    alice.child.setwinsize(12, 50)
    alice.type("\x0c")  # redraw requests are harmless; the resize alone must be enough
    alice.wait_for("alice>")
    deadline = time.monotonic() + WAIT_SECONDS
    while not alice.lines()[10].startswith(" pty room · 127.0.0.1"):
        assert alice.pump() and time.monotonic() < deadline, alice.text()
    assert all(len(row) <= 50 for row in alice.lines())
    alice.type("\x03")  # Ctrl-C leaves cleanly too
    assert alice.wait_exit() == 0


def test_a_mention_rings_the_bell_once_and_tab_completes_names(
    server: Server, ttys: list[Tty]
) -> None:
    alice = connect(server, ttys, "alice", MULTICHAT_PASSWORD=PASSWORD)
    alice.wait_for("Welcome to pty room, alice!")
    bob = say_raw(server.port, "Bob Smith", "hey ALICE, lunch?")
    alice.wait_for("Bob Smith: hey ALICE, lunch?")
    carol = say_raw(server.port, "carol", "lunch is at noon")  # names nobody: no bell
    alice.wait_for("carol: lunch is at noon")
    assert alice.raw.count(b"\a") == 1
    assert alice.emulator.calls.count("beep") == 1

    alice.type("thanks bo\t")
    alice.wait_for("alice> thanks Bob Smith")
    alice.type("at noon\r")
    alice.wait_for("alice: thanks Bob Smith at noon ✓")
    alice.type("/ki\t")
    alice.wait_for("alice> /kick")
    alice.type("\x15/quit\r")
    assert alice.wait_exit() == 0
    assert alice.raw.count(b"\a") == 1, "our own line naming others rings nothing"
    bob.close()
    carol.close()


def test_no_bell_means_no_bell(server: Server, ttys: list[Tty]) -> None:
    alice = connect(server, ttys, "alice", "--no-bell", MULTICHAT_PASSWORD=PASSWORD)
    alice.wait_for("Welcome to pty room, alice!")
    bob = say_raw(server.port, "bob", "alice: are you there?")
    alice.wait_for("bob: alice: are you there?")
    carol = say_raw(server.port, "carol", "after the mention")
    alice.wait_for("carol: after the mention")
    assert b"\a" not in alice.raw
    assert "beep" not in alice.emulator.calls
    alice.type("\x03")
    assert alice.wait_exit() == 0
    bob.close()
    carol.close()


def test_rooms_and_join_in_the_window(ttys: list[Tty]) -> None:
    server = Server("games")
    try:
        alice = connect(server, ttys, "alice", MULTICHAT_PASSWORD=PASSWORD)
        alice.wait_for("Welcome to pty room, alice!")
        alice.type("/rooms\r")
        alice.wait_for("Rooms (2):")
        alice.wait_for("pty room (you are here), 1 online")
        alice.wait_for("games, 0 online")
        alice.type("/join games\r")
        alice.wait_for("Welcome to games, alice! Online: alice")
        alice.wait_for("games · 127.0.0.1:")  # the status line names the room now
        alice.type("/join nowhere\r")
        alice.wait_for("there is no room called 'nowhere' here; /rooms lists them")
        alice.type("tata\r")
        assert alice.wait_exit() == 0
    finally:
        server.stop()
