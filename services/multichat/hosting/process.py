"""Running a room as a process: signals, the host's console, logging, and the password.

Both `multichat serve` and `multichat up` host a room this way; `up` adds the tunnel.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

from .. import __version__
from ..protocol import commands
from ..protocol.events import Error, Moderate, Topic
from ..protocol.sanitize import clean_for_terminal
from ..protocol.textmode import describe_members
from ..server.backplane_errors import BackplaneError
from ..server.chat import MAX_TOPIC_CHARS
from ..server.history import HistoryError
from ..server.listeners import ChatServer
from ..server.moderation import HOST
from ..server.room import Refused
from ..server.rooms import HostedRoom
from .control import MODERATION_COMMANDS, format_answer
from .lan import lan_addresses
from .statefile import RoomState, remove_state, write_state

log = logging.getLogger("multichat")

# A password file is one line; anything longer is not a password file.
MAX_PASSWORD_FILE_BYTES = 4096
PASSWORD_ENV = "MULTICHAT_PASSWORD"
# What closes the room from its console; `shutdown` is the documented one.
SHUTDOWN_WORDS = frozenset({"shutdown", "stop", "quit", "exit"})
CONSOLE_HELP = (
    ("shutdown [REASON]", "close every room, telling everyone why"),
    ("who", "who is online (in each room), away, an operator"),
    ("rooms", "the rooms, who is in each, their topics"),
    ("room add NAME", "open another room"),
    ("topic [TEXT]", "set the room's topic (nothing: clear it)"),
    *(
        (usage.replace("/", ""), meaning)
        for usage, meaning in commands.OPERATOR_HELP
        if not usage.startswith("/topic")
    ),
    ("... --room NAME", "any of these in another room than the first (or the member's)"),
)


class HostError(Exception):
    """A reason the room cannot start, worded for the person who ran the command."""


# How long a thread that wants the GIL waits before the running one must give it up (Python's
# default is 5 ms). The history's reads run in worker threads (a member resuming, a checkpoint a
# second after commits) while the event loop fans out. When the history's commits ran in a
# thread, at 5 ms a waiting commit took 60 to 120 ms during a burst, and at 0.5 ms a burst with
# a data directory went from 0.67M to 0.94M deliveries/s in one run on the test VM; they now
# run in a process of their own. Only another thread's asking costs the loop a switch.
SWITCH_INTERVAL_SECONDS = 0.0005


def hand_the_gil_over_quickly() -> None:
    """Let the history's writer thread (and any other) take the GIL soon after asking."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def freeze_startup_objects() -> None:
    """Move everything allocated so far out of the garbage collector's sight.

    The modules, classes and constants loaded at startup never die, yet every full collection
    walks them all: that pause was the steady benchmark's p99 (14 ms; 3 ms once frozen).
    """
    gc.collect()
    gc.freeze()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # The banner says in one line what went wrong with the tunnel. ngrok's own lines are for
    # --verbose, and then the launcher prints them itself: pyngrok's copies would repeat them.
    logging.getLogger("pyngrok").setLevel(logging.INFO if verbose else logging.CRITICAL + 1)
    logging.getLogger("pyngrok.process.ngrok").setLevel(logging.CRITICAL + 1)


def read_password_file(path: Path) -> str:
    """The first line of `path` (a compose secret, say), without its line ending."""
    try:
        data = path.read_bytes()[: MAX_PASSWORD_FILE_BYTES + 1]
    except OSError as exc:
        raise HostError(f"cannot read the password file {path}: {exc.strerror}") from None
    if len(data) > MAX_PASSWORD_FILE_BYTES:
        raise HostError(f"the password file {path} is too large to be a password")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HostError(f"the password file {path} is not UTF-8 text") from None
    password = text.splitlines()[0] if text.splitlines() else ""
    if not password:
        raise HostError(
            f"the password file {path} is empty; put the room password on its first line"
        )
    return password


def password_from(password: str | None, password_file: Path | None, *, prompt: bool) -> str | None:
    """The room password from, in order: the option, the file, the environment, a prompt."""
    if password:
        return password
    if password_file is not None:
        return read_password_file(password_file)
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if prompt and sys.stdin is not None and sys.stdin.isatty():
        import getpass

        while True:
            typed = getpass.getpass("Room password (friends will need it): ")
            if typed:
                return typed
            print("The password cannot be empty.", file=sys.stderr)
    return None


def port_in_use_message(port: int, exc: OSError) -> str:
    return (
        f"cannot listen on port {port}: {exc.strerror or exc}. Is another room running? "
        "Stop it with `multichat down`, or pick another port with --port."
    )


async def watch_signals(shutdown: Callable[[str], None]) -> None:
    """Ctrl-C and SIGTERM take the same graceful path as `multichat down`."""
    wanted = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        wanted.append(signal.SIGHUP)
    with trio.open_signal_receiver(*wanted) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("received %s", name)
            shutdown("the host stopped the room")


async def watch_console(server: ChatServer) -> None:
    """Commands typed on the host's console: `shutdown [reason]` closes the room gracefully;
    `kick`, `ban`, `topic`, `who`, `help` and the rest moderate it, as the host."""
    if sys.stdin is None or sys.stdin.closed:
        return
    while True:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            return  # no console (EOF): nothing more to watch
        said = console_command(server, line)
        if said:
            print(said, flush=True)  # stdout: what the host asked for, beside the log
        if server.shutdown_reason is not None:
            return


def console_command(server: ChatServer, line: str) -> str:
    """Carry out one line typed on the host's console; what to print (may be empty).

    The room's own command grammar reads it, with or without the slash, and moderation acts
    as the host: every room's operator, whom nobody can kick. `--room NAME` says which room;
    without it, the room of the member named, else the first room.
    """
    verb, _, rest = line.strip().partition(" ")
    verb = verb.lower().removeprefix("/")
    rest = rest.strip()
    rooms = server.rooms
    if not verb:
        return ""
    if verb in SHUTDOWN_WORDS:
        server.shutdown_nowait(rest or "the host closed the room")
        return ""
    if verb in ("help", "?"):
        width = max(len(usage) for usage, _ in CONSOLE_HELP)
        return "\n".join(f"{usage.ljust(width)}  {meaning}" for usage, meaning in CONSOLE_HELP)
    if verb == "room":
        action, _, name = rest.partition(" ")
        if action.lower() != "add" or not name.strip():
            return "! usage: room add NAME"
        try:
            made = rooms.add_nowait(name.strip())
        except Refused as exc:
            return f"! {exc.message}"
        return f"Room {made.name!r} is open: friends join it with /join {made.name}"
    if verb == "rooms":
        return "\n".join(_describe_room(hosted, hosted is rooms.default) for hosted in rooms)
    words = rest.split()
    try:
        named = commands.take_room(words)
    except commands.CommandError as exc:
        return f"! {exc}"
    try:
        chosen = [rooms.find(named)] if named is not None else list(rooms)
    except Refused as exc:
        return f"! {exc.message}"
    if verb in ("who", "names"):
        return "\n".join(_who(hosted, len(chosen) > 1) for hosted in chosen)
    if named is not None:
        rest = " ".join(words)  # what is left of the line once `--room NAME` is taken out
    if verb == "topic":
        room = chosen[0].room
        # As the room cleans a member's /topic (server/chat.py): one line, no escapes, capped.
        room.topic = clean_for_terminal(rest, single_line=True).strip()[:MAX_TOPIC_CHARS]
        room.broadcast(Topic(room.topic, HOST))
        return f"Topic: {room.topic}" if room.topic else "The topic is cleared."
    if verb not in MODERATION_COMMANDS:
        return f"! unknown command {verb[:20]!r}; type help for the list"
    try:
        request = commands.parse(f"{verb} {rest}")
    except commands.CommandError as exc:
        return f"! {str(exc).replace('usage: /', 'usage: ')}"
    assert isinstance(request, Moderate)
    answer = server.ctx.room_for(named, request).moderation.command(HOST, request, by_host=True)
    if isinstance(answer, Error):
        return f"! {answer.message}"
    return format_answer(answer)


def _who(hosted: HostedRoom, several: bool) -> str:
    """`Online (2): ann (op), bob`, led by the room's name when there are several."""
    members = hosted.room.who()
    listed = describe_members(members.names, members.away, members.ops) or "nobody"
    line = f"Online ({len(members.names)}): {listed}"
    return f"{hosted.name}: {line}" if several else line


def _describe_room(hosted: HostedRoom, default: bool) -> str:
    """One room, as the console's `rooms` lists it."""
    room = hosted.room
    marks = ", ".join(
        m for m in ("first" if default else "", "locked" if hosted.moderation.locked else "") if m
    )
    names = ", ".join(room.names()) or "nobody"
    topic = f" - {room.topic}" if room.topic else ""
    return f"{room.name}{f' ({marks})' if marks else ''}: {len(room)} online ({names}){topic}"


async def host_room(
    server: ChatServer,
    port: int,
    host: str | None,
    *,
    token: str,
    on_started: Callable[[trio.Nursery, RoomState], Awaitable[None]] | None = None,
    console: bool = True,
    proxy_port: int | None = None,
    fingerprint: str = "",
) -> None:
    """Serve `server` until it shuts down, with signals and the console wired to shutdown.

    While it runs, the room is recorded in its state file (for `status` and `down`, and
    with its certificate's `fingerprint` for `invite`).
    """
    failure: HostError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals, server.shutdown_nowait)
        if console:
            nursery.start_soon(watch_console, server)
        try:
            bound = await nursery.start(partial(server.serve, port, host, proxy_port=proxy_port))
        except OSError as exc:
            # Raised in here, it would reach the caller wrapped in an ExceptionGroup.
            failure = HostError(port_in_use_message(port, exc))
        except (BackplaneError, HistoryError) as exc:
            failure = HostError(str(exc))
        else:
            await _run_started(server, nursery, bound, host, token, on_started, fingerprint)
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _run_started(
    server: ChatServer,
    nursery: trio.Nursery,
    bound: int,
    host: str | None,
    token: str,
    on_started: Callable[[trio.Nursery, RoomState], Awaitable[None]] | None,
    fingerprint: str,
) -> None:
    state = RoomState(
        pid=os.getpid(),
        port=bound,
        token=token,
        room=server.rooms.default.name,
        started=time.time(),
        lan=lan_addresses() if host in (None, "", "0.0.0.0", "::") else [host or ""],
        version=__version__,
        host=host or "",
        fingerprint=fingerprint,
    )
    try:
        write_state(state)
    except OSError as exc:
        log.warning("cannot write the state file (status/down will not find the room): %s", exc)
    try:
        if on_started is not None:
            # A room closed while its tunnel is still opening must not wait for the tunnel.
            with trio.CancelScope() as starting:
                nursery.start_soon(_cancel_when_stopped, server, starting)
                await on_started(nursery, state)
        await server.stopped.wait()
    finally:
        remove_state(bound, os.getpid())


async def _cancel_when_stopped(server: ChatServer, scope: trio.CancelScope) -> None:
    await server.stopped.wait()
    scope.cancel()
