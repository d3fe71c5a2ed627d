"""A member's connection to a room, kept alive across network trouble. No terminal code here.

`ChatClient.join` connects and logs in once, raising what a person must fix (`login.py`'s
errors). `run` then reads and writes until the member leaves, the room closes, or the
connection is lost and the attempts to rejoin fail (reconnect.py says when to try, and when a
refusal ends it). Everything that happens goes to one `listener` callback, synchronously and in
order: the room's events as they arrive, and the client's own updates (`Joined`, `Lost`,
`NotSent`, updates.py). It also keeps what the interface shows beside the messages current, in
its `Roster` (roster.py): our own name (a `/nick` is followed, and a rejoin uses the new one),
who is online, away and an operator, and the topic.

Typed lines are never lost to a broken connection: each carries an id, and stays in the
`Outbox` (outbox.py) until the server's echo of it (the acknowledgement) arrives. After a
rejoin the client asks `who` and holds its lines until the answer: everything the room replays
before it is history, where a line the old connection delivered but whose echo was lost shows
up under our name and need not be sent twice.

Lines are messages, public or private (`/msg`, `/me`); everything else a member asks (`/nick`,
`/away`, `/kick`, ...) is a request, sent at once and only while connected: the room answers
it with an error or a notice, or not at all, and asking again later is the member's call.

A server hosts rooms; the client joins the one it is asked for (`--room`, or the room an invite
names), and `/join NAME` moves it: the server answers with the other room's welcome, which the
client follows (`Joined` with `moved`), and a rejoin after a lost connection goes back to the
room the member was in. Lines typed before a `/join` are said in the room they were typed in.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import trio

from ..protocol.connection import ClientConnection
from ..protocol.errors import RemoteProtocolError
from ..protocol.events import (
    CameBack,
    ConnectionClosed,
    Error,
    Event,
    Gap,
    Join,
    JoinRoom,
    Leave,
    Members,
    Message,
    NeedData,
    Notice,
    Ping,
    Pong,
    Quit,
    Renamed,
    Say,
    Shutdown,
    Topic,
    Welcome,
    WentAway,
    Who,
)
from ..protocol.state import State
from . import reconnect
from .address import Address
from .commands import Request
from .login import RECEIVE_BYTES, ClientError, LoginRefused, login
from .outbox import Line, Outbox
from .reconnect import KICKS, RECONNECT_TRIES
from .roster import Roster
from .updates import Ending, Joined, Listener, Lost, NotSent

# Below the server's 90 s idle ping, so a dead link is found first on our side; also keeps
# home routers' NAT mappings alive.
IDLE_PING_SECONDS = 60.0
# With lines waiting for their echo, silence is suspicious sooner.
ACK_PING_SECONDS = 10.0
# After our ping, this long without a byte and the connection is taken for dead.
PONG_SECONDS = 20.0
# On `quit`, lines still waiting for their echo get this long, and the server's close as well;
# a room with flood control echoes a burst of lines in a few seconds.
QUIT_SECONDS = 5.0


class _Lost(Exception):
    """The current connection is gone; the message says why."""


class ChatClient:
    """One member in one room. Call `join`, then `run`; the `*_nowait` methods never block."""

    def __init__(
        self,
        address: Address,
        name: str,
        password: str,
        listener: Listener,
        *,
        room: str | None = None,
    ) -> None:
        self.address = address
        self.password = password
        self.listener = listener
        self.state: Literal["connecting", "connected", "reconnecting", "closed"] = "connecting"
        # The room to join: asked for, else the one an invite names (None: the server's first).
        self._room_asked = room
        self.roster = Roster(name)  # the room, as the interface shows it beside the messages
        self._stream: trio.abc.Stream | None = None
        self._conn = ClientConnection()
        self.outbox = Outbox()  # typed lines, until the room acknowledges them
        self._control: list[Event] = []  # pongs and requests, sent ahead of lines
        self._holding = False  # after a rejoin, lines wait for the history to end
        self._held: list[Event] = []  # what the room replayed while holding
        self._missed = 0  # messages said while we were away
        self._quitting = False
        self._quit_sent = False
        self._shutdown: str | None = None
        self._last_error: Error | None = None
        self._last_notice: Notice | None = None
        self._last_seq = 0
        self._last_ts = 0.0
        self._wakeup = trio.Event()
        self._session_scope: trio.CancelScope | None = None
        self._reconnect_scope: trio.CancelScope | None = None

    # -- what the interface calls --

    @property
    def pending(self) -> int:
        """Lines typed and not yet acknowledged."""
        return len(self.outbox)

    def say_nowait(self, text: str, *, to: str | None = None, action: bool = False) -> Line:
        """Queue `text` for the room (for `to` alone if given); it is sent as soon as there is
        a connection."""
        line = self.outbox.add_nowait(text, to=to, action=action)
        self._wakeup.set()
        return line

    def request_nowait(self, request: Request) -> bool:
        """Ask the room for something other than a message; False when not connected.

        Not kept for a later connection: a rename, a kick or a member list asked for minutes
        ago is not what the member wants by the time the room is back.
        """
        if self.state != "connected":
            return False
        self._control.append(request)
        self._wakeup.set()
        return True

    def who_nowait(self) -> bool:
        """Ask for the member list; False when not connected (the answer would be stale)."""
        return self.request_nowait(Who())

    def quit_nowait(self) -> None:
        """Leave once the lines already queued are acknowledged; `run` returns soon after."""
        self._quitting = True
        self._wakeup.set()
        if self._session_scope is not None:
            self._session_scope.deadline = min(
                self._session_scope.deadline, trio.current_time() + QUIT_SECONDS
            )
        if self._reconnect_scope is not None:
            self._reconnect_scope.cancel()

    async def wait_acknowledged(self) -> None:
        """Wait until every line queued so far has been acknowledged or refused."""
        await self.outbox.wait_acknowledged()

    # -- connecting --

    async def join(self) -> Welcome:
        """Connect and log in; raises ConnectFailed, NotMultichat or LoginRefused."""
        room = self._room_asked or self.address.room
        try:
            joined = await login(self.address, self.roster.name, self.password, room=room)
        except LoginRefused as exc:
            # An invite names the room it was made in; if the host has renamed the first room
            # since, the invite still gets in, to the room the server has first now.
            if exc.code != "no_such_room" or self._room_asked is not None or room is None:
                raise
            joined = await login(self.address, self.roster.name, self.password)
        self._stream, self._conn, welcome = joined
        self._joined(welcome)
        return welcome

    def _joined(self, welcome: Welcome, *, moved: bool = False) -> None:
        self.roster.welcomed(welcome, moved=moved)
        self.state = "connected"

    # -- running --

    async def run(self) -> Ending:
        """Chat until the member quits, the room closes, or the connection cannot be rebuilt."""
        assert self._stream is not None, "join() first"
        try:
            while True:
                try:
                    return await self._serve(self._stream, self._conn)
                except _Lost as lost:
                    reason = str(lost)
                finally:
                    await trio.aclose_forcefully(self._stream)
                self.outbox.requeue_nowait()
                if self._quitting:
                    return self._ending("quit", "you left")
                ending = await self._reconnect(reason)
                if ending is not None:
                    return ending
        finally:
            self.state = "closed"
            self.outbox.settle_nowait()

    def _ending(self, why: Literal["quit", "shutdown", "lost", "kicked"], reason: str) -> Ending:
        self.outbox.requeue_nowait()
        return Ending(why, reason, tuple(line.text for line in self.outbox))

    async def _reconnect(self, reason: str) -> Ending | None:
        self.state = "reconnecting"
        lost_at = trio.current_time()
        tried = counted = 0
        with trio.CancelScope() as self._reconnect_scope:
            while counted < RECONNECT_TRIES:
                tried += 1
                counted += 1
                delay = reconnect.delay(tried)
                self.listener(Lost(reason, counted, RECONNECT_TRIES, delay))
                await trio.sleep(delay)
                try:
                    # `since`: the room replays what was said meanwhile, each message once.
                    # The room we were in, by its name as the server said it.
                    self._stream, self._conn, welcome = await login(
                        self.address,
                        self.roster.name,
                        self.password,
                        since=self._last_seq,
                        room=self.roster.room or None,
                    )
                except LoginRefused as exc:
                    verdict = reconnect.after_refusal(exc.code, trio.current_time() - lost_at)
                    if verdict == "kicked":
                        return self._ending("kicked", str(exc))
                    if verdict == "give_up":
                        return self._ending("lost", f"could not rejoin {self.address}: {exc}")
                    if verdict == "retry_uncounted":
                        counted -= 1  # our old connection still holds the name, for a while
                    reason = str(exc)
                except ClientError as exc:
                    reason = str(exc)
                else:
                    self._joined(welcome)
                    self._holding = True
                    self._held.clear()
                    self._missed = 0
                    self._control[:] = [Who()]  # nothing left over from the old connection
                    return None
            return self._ending(
                "lost", f"could not reconnect after {RECONNECT_TRIES} tries: {reason}"
            )
        return self._ending("quit", "you left")

    async def _serve(self, stream: trio.abc.Stream, conn: ClientConnection) -> Ending:
        """One connection's reader and writer; raises _Lost if the connection breaks."""
        self._quit_sent = False
        self._last_error = None
        broken: list[str] = []  # why the writer stopped, if it did
        result: Ending | str | None = None
        with trio.CancelScope() as self._session_scope:
            if self._quitting:
                self._session_scope.deadline = trio.current_time() + QUIT_SECONDS
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, stream, conn, broken, nursery.cancel_scope)
                result = await self._read_loop(stream, conn)
                nursery.cancel_scope.cancel()
        self._session_scope = None
        if isinstance(result, Ending):
            return result
        error = self._last_error
        if error is not None and error.code in KICKS:
            # Told why, then closed: even if our writer noticed the close first.
            return self._ending("kicked", error.message)
        if self._shutdown is not None:
            return self._ending("shutdown", self._shutdown)
        if result is None and not broken:
            # Only the quit deadline ends a session with no result: the server did not close.
            return self._ending("quit", "you left")
        raise _Lost(result or broken[0])

    async def _write_loop(
        self,
        stream: trio.abc.Stream,
        conn: ClientConnection,
        broken: list[str],
        done: trio.CancelScope,
    ) -> None:
        try:
            while True:
                data = self._take_outgoing(conn)
                if data:
                    await stream.send_all(data)
                    continue
                if self._quit_sent:
                    return
                self._wakeup = trio.Event()
                with trio.move_on_at(self.outbox.retry_at):
                    await self._wakeup.wait()
                self.outbox.retry_due_nowait(trio.current_time())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            broken.append(f"connection lost ({exc or type(exc).__name__})")
            done.cancel()

    def _take_outgoing(self, conn: ClientConnection) -> bytes:
        if self._quit_sent or conn.state is State.CLOSED:
            # The reader saw the end first; what is queued waits for the next connection.
            self._control.clear()
            return b""
        # A move waits for the lines typed before it: they are said in the room they were
        # typed in. Everything else goes ahead of the lines.
        moves = [event for event in self._control if isinstance(event, JoinRoom)]
        parts = [conn.send(event) for event in self._control if not isinstance(event, JoinRoom)]
        self._control[:] = moves
        if not self._holding:
            for line in self.outbox.take_nowait():
                parts.append(conn.send(Say(line.text, line.id, line.to, line.action)))
            parts += [conn.send(event) for event in moves]
            self._control.clear()
            # `quit` waits for the echoes: once it is sent, the protocol reads nothing more.
            if self._quitting and not self.outbox.awaiting_echo:
                parts.append(conn.send(Quit()))
                self._quit_sent = True
        return b"".join(parts)

    async def _read_loop(self, stream: trio.abc.Stream, conn: ClientConnection) -> Ending | str:
        """Events until the connection ends: how it ended, or why it broke."""
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                return f"the server sent something this client does not understand ({exc})"
            if isinstance(event, NeedData):
                try:
                    data = await self._receive(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    return f"connection lost ({exc or type(exc).__name__})"
                if data is None:
                    return "no answer from the server"
                conn.receive_data(data)
            elif isinstance(event, ConnectionClosed):
                return self._closed()
            else:
                self._handle(event)

    async def _receive(self, stream: trio.abc.Stream) -> bytes | bytearray | None:
        """The next bytes; None if the server stays silent even when pinged."""
        quiet = ACK_PING_SECONDS if self.outbox.awaiting_echo else IDLE_PING_SECONDS
        with trio.move_on_after(quiet):
            return await stream.receive_some(RECEIVE_BYTES)
        self._control.append(Ping("client"))
        self._wakeup.set()
        with trio.move_on_after(PONG_SECONDS):
            return await stream.receive_some(RECEIVE_BYTES)
        return None

    def _closed(self) -> Ending | str:
        if self._shutdown is not None:
            return self._ending("shutdown", self._shutdown)
        if self._quit_sent:
            return self._ending("quit", "you left")
        error = self._last_error
        if error is not None and error.code in KICKS:
            return self._ending("kicked", error.message)
        if error is not None:
            return f"the server closed the connection ({error.message})"
        return "the server closed the connection"

    # -- events from the room --

    def _handle(self, event: Event) -> None:
        if self._holding and self._replayed(event):
            return
        match event:
            case Message(seq, ts, _, _, id):
                self._last_seq, self._last_ts = seq, max(self._last_ts, ts)
                if isinstance(id, str):  # ours are strings; another client's are not ours
                    self.outbox.acknowledge_nowait(id)
                    self._check_quit()
            case Members():
                self.roster.listed(event)
                if self._holding:
                    self._holding = False
                    self._wakeup.set()
                    welcome = self.roster.welcome_now()
                    self.listener(Joined(welcome, rejoined=True, missed=self._missed))
                    held, self._held = self._held, []
                    for earlier in held:  # "while you were away", then what was said
                        self.listener(earlier)
                    return
            case Ping(data):
                self._control.append(Pong(data))
                self._wakeup.set()
                return
            case Pong():
                return
            case Notice():
                # An operator hears of its own action twice (the room's notice and the answer
                # to its command): the same notice, to the same instant, is shown once.
                if event == self._last_notice:
                    return
                self._last_notice = event
                self._last_ts = max(self._last_ts, event.ts)
            case Shutdown(reason):
                self._shutdown = reason or "the room closed"
            case Error():
                self._last_error = event
                refused = self.outbox.refuse_nowait(event, trio.current_time())
                if refused is not None:
                    line, fate = refused
                    if fate == "dropped":
                        self.listener(NotSent(line, event))
                    elif fate == "retried":
                        self._wakeup.set()  # the writer waits again, until `retry_at`
                        self.listener(event)  # the member sees why its line waits
                    self._check_quit()
                    return
            case Gap(missed):
                self._missed += missed
                return
            case Welcome() if not self._holding:
                self._moved(event)
                return
            case _:
                self._track(event)
        if self._holding:
            # Replayed after a rejoin: told once the rejoin is, after "while you were away".
            self._missed += isinstance(event, Message)
            self._held.append(event)
        else:
            self.listener(event)

    def _moved(self, welcome: Welcome) -> None:
        """The server moved us to another room (`/join`): its welcome says who is there."""
        self._joined(welcome, moved=True)
        # Numbers are the room's own: a rejoin asks the new room for what follows its newest
        # (the history that comes next counts down to what it shows).
        self._last_seq = welcome.seq
        self.listener(Joined(welcome, moved=True))

    def _track(self, event: Event) -> None:
        """Follow the room (the roster), and the newest time it has told of."""
        match event:
            case Join(_, ts) | Leave(_, _, ts) | Renamed(_, _, ts):
                self._last_ts = max(self._last_ts, ts)
        self.roster.follow(event)

    def _replayed(self, event: Event) -> bool:
        """While holding after a rejoin: whether `event` is history already handled.

        A message of ours the old connection delivered, whose echo was lost, counts as its
        echo now: its line leaves the queue, and the listener gets it with the line's id.
        """
        match event:
            case Message(seq, ts, sender, text, None):
                if seq <= self._last_seq and ts <= self._last_ts:
                    return True
                mine = sender == self.roster.name
                line = self.outbox.claim_replayed_nowait(text) if mine else None
                if line is not None:
                    self._handle(dataclasses.replace(event, id=line.id))
                    return True
            case Join(_, ts) | Leave(_, _, ts) | Renamed(_, _, ts) | Notice(_, ts):
                return ts <= self._last_ts
            case WentAway() | CameBack() | Topic():
                # Undated: history or news, there is no telling. Followed quietly: the welcome
                # brought the topic, and the member list about to come says who is away.
                self._track(event)
                return True
        return False

    def _check_quit(self) -> None:
        if self._quitting and not self.outbox:
            self._wakeup.set()  # every line is acknowledged: the writer sends `quit`
