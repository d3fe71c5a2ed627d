"""The client's connection logic against the real server, and against scripted fake servers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, start_room
from multichat.client import connection as client_module
from multichat.client import reconnect
from multichat.client.address import Address
from multichat.client.connection import ChatClient
from multichat.client.login import ConnectFailed, LoginRefused, NotMultichat
from multichat.client.reconnect import backoff
from multichat.client.updates import Ending, Joined, Lost, NotSent, Update
from multichat.protocol import wire
from multichat.protocol.connection import LineBuffer
from multichat.protocol.events import (
    Away,
    Back,
    CameBack,
    Error,
    Event,
    Hello,
    Join,
    Leave,
    Members,
    Message,
    Moderate,
    Nick,
    Notice,
    Ping,
    Pong,
    Quit,
    Renamed,
    Say,
    SetTopic,
    Shutdown,
    Topic,
    Welcome,
    WentAway,
    Who,
)
from multichat.server.listeners import ChatServer
from multichat.server.moderation import HOST

LOCAL = "127.0.0.1"


class Recorder:
    """A listener that keeps everything, and lets a test wait for one kind of event."""

    def __init__(self) -> None:
        self.events: list[Event | Update] = []
        self._changed = trio.Event()

    def __call__(self, event: Event | Update) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, match: Callable[[Event | Update], bool]) -> Event | Update:
        seen = 0
        while True:
            for event in self.events[seen:]:
                if match(event):
                    return event
            seen = len(self.events)
            await self._changed.wait()

    def texts(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Message)]


def is_text(text: str) -> Callable[[Event | Update], bool]:
    return lambda e: isinstance(e, Message) and e.text == text


async def joined_client(
    port: int, name: str, password: str = PASSWORD
) -> tuple[ChatClient, Recorder]:
    recorder = Recorder()
    client = ChatClient(Address(LOCAL, port), name, password, recorder)
    await client.join()
    return client, recorder


# -- with the real server --


async def test_two_members_chat_both_ways() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, alice_saw = await joined_client(room.port, "alice")
            bob, bob_saw = await joined_client(room.port, "bob")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                nursery.start_soon(bob.run)
                line = alice.say_nowait("hi bob")
                assert alice.pending == 1
                echo = await alice_saw.wait_for(is_text("hi bob"))
                assert isinstance(echo, Message) and echo.id == line.id
                heard = await bob_saw.wait_for(is_text("hi bob"))
                assert isinstance(heard, Message) and heard.sender == "alice" and heard.id is None
                bob.say_nowait("hi alice")
                await alice_saw.wait_for(is_text("hi alice"))
                await alice.wait_acknowledged()
                assert alice.pending == 0
                assert alice.roster.members == ["alice", "bob"]
                nursery.cancel_scope.cancel()


async def test_who_quit_and_leave() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, alice_saw = await joined_client(room.port, "alice")
            bob = await room.join("bob")
            async with trio.open_nursery() as nursery:
                endings: list[Ending] = []

                async def run() -> None:
                    endings.append(await alice.run())

                nursery.start_soon(run)
                await alice_saw.wait_for(lambda e: isinstance(e, Join) and e.name == "bob")
                assert alice.who_nowait()
                members = await alice_saw.wait_for(lambda e: isinstance(e, Members))
                assert isinstance(members, Members) and members.names == ("alice", "bob")
                alice.say_nowait("bye")
                alice.quit_nowait()
            assert endings == [Ending("quit", "you left")]
            message = await bob.expect(Message)
            assert isinstance(message, Message) and message.text == "bye"
            leave = await bob.expect(Leave)
            assert isinstance(leave, Leave) and leave.name == "alice" and leave.reason == "quit"
            await bob.aclose()


async def test_shutdown_ends_the_run() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, alice_saw = await joined_client(room.port, "alice")
            async with trio.open_nursery() as nursery:
                endings: list[Ending] = []

                async def run() -> None:
                    endings.append(await alice.run())

                nursery.start_soon(run)
                room.server.shutdown_nowait("maintenance at noon")
            assert endings == [Ending("shutdown", "maintenance at noon")]
            assert Shutdown("maintenance at noon") in alice_saw.events
            assert alice.state == "closed"


async def test_refused_line_is_reported_and_acknowledged() -> None:
    with trio.fail_after(10):
        async with start_room(limits=RELAXED.replace(max_text_chars=10)) as room:
            alice, alice_saw = await joined_client(room.port, "alice")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                long = alice.say_nowait("x" * 11)
                alice.say_nowait("short")
                await alice.wait_acknowledged()
                refused = [e for e in alice_saw.events if isinstance(e, NotSent)]
                assert [(r.line, r.error.code) for r in refused] == [(long, "too_long")]
                assert alice_saw.texts() == ["short"]
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("name", "password", "code"),
    [
        ("alice", "wrong", "bad_password"),
        ("taken", PASSWORD, "name_taken"),
        ("a\tb", PASSWORD, "bad_name"),
    ],
)
async def test_login_refusals(name: str, password: str, code: str) -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            holder = await room.join("taken")
            client = ChatClient(Address(LOCAL, room.port), name, password, lambda e: None)
            with pytest.raises(LoginRefused) as info:
                await client.join()
            assert info.value.code == code
            await holder.aclose()


# -- connection errors --


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused() -> None:
    port = closed_port()
    client = ChatClient(Address(LOCAL, port), "alice", PASSWORD, lambda e: None)
    with trio.fail_after(10), pytest.raises(ConnectFailed, match="connection refused"):
        await client.join()


async def test_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    async def never(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    monkeypatch.setattr(trio, "open_tcp_stream", never)
    client = ChatClient(Address("10.255.255.1", 5002), "alice", PASSWORD, lambda e: None)
    with pytest.raises(ConnectFailed, match=r"timed out connecting to 10\.255\.255\.1:5002"):
        await client.join()


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "unknown host 'h'"),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), "cannot look up 'h'"),
        (OSError(101, "Network is unreachable"), "cannot reach h:1"),
        (OSError(110, "Connection timed out"), "timed out connecting to h:1"),
        (OSError(13, "Permission denied"), "cannot connect to h:1: Permission denied"),
    ],
)
async def test_connect_error_messages(
    monkeypatch: pytest.MonkeyPatch, error: OSError, says: str
) -> None:
    async def failing(host: str, port: int) -> trio.SocketStream:
        raise error

    monkeypatch.setattr(trio, "open_tcp_stream", failing)
    client = ChatClient(Address("h", 1), "alice", PASSWORD, lambda e: None)
    with pytest.raises(ConnectFailed) as info:
        await client.join()
    assert str(info.value) == says or str(info.value).startswith(says)


# -- scripted servers --


class Script:
    """One accepted connection, spoken to frame by frame."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = LineBuffer(1 << 20)

    async def recv(self) -> Event | None:
        while (line := self.buffer.next_line()) is None:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self.buffer.feed(data)
        return wire.decode(line)

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(b"".join(wire.encode(e) for e in events))

    async def welcome(self, members: tuple[str, ...] = ("alice",)) -> Hello:
        hello = await self.recv()
        assert isinstance(hello, Hello)
        await self.send(Welcome(hello.name, "room", members))
        return hello


Handler = Callable[[Script], Awaitable[None]]


@asynccontextmanager
async def scripted(*handlers: Handler) -> AsyncIterator[int]:
    """A listener on a loopback port; the n-th connection runs the n-th handler."""
    pending = list(handlers)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)

        async def serve(stream: trio.SocketStream) -> None:
            handler = pending.pop(0) if pending else None
            async with stream:
                if handler is not None:
                    await handler(Script(stream))

        await nursery.start(trio.serve_listeners, serve, listeners)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def goes_silent(received: list[Event | None]) -> Handler:
    """A server that welcomes, records the next frame it gets, then never says another word."""

    async def handler(script: Script) -> None:
        await script.welcome()
        received.append(await script.recv())
        await trio.sleep_forever()

    return handler


async def raw(data: bytes, script: Script) -> None:
    await script.stream.send_all(data)
    await trio.sleep_forever()


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        b'{"type": "members", "names": []}\n',  # JSON, but not an answer to hello
        b"\x00" * 64 + b"\n",
    ],
)
async def test_not_a_multichat_server(data: bytes) -> None:
    async def handler(script: Script) -> None:
        await raw(data, script)

    with trio.fail_after(10):
        async with scripted(handler) as port:
            client = ChatClient(Address(LOCAL, port), "alice", PASSWORD, lambda e: None)
            with pytest.raises(NotMultichat, match="is not a multichat server"):
                await client.join()


async def test_silent_server(autojump_clock: trio.abc.Clock) -> None:
    async def handler(script: Script) -> None:
        await trio.sleep_forever()

    async with scripted(handler) as port:
        client = ChatClient(Address(LOCAL, port), "alice", PASSWORD, lambda e: None)
        with pytest.raises(NotMultichat, match="did not answer within 10 s"):
            await client.join()


async def test_server_closes_without_answering() -> None:
    async def handler(script: Script) -> None:
        await script.recv()

    with trio.fail_after(10):
        async with scripted(handler) as port:
            client = ChatClient(Address(LOCAL, port), "alice", PASSWORD, lambda e: None)
            with pytest.raises(ConnectFailed, match="closed the connection without answering"):
                await client.join()


async def test_answers_ping_and_keeps_reading() -> None:
    got: list[Event | None] = []

    async def handler(script: Script) -> None:
        await script.welcome()
        await script.send(Ping("are you there"))
        got.append(await script.recv())
        await script.send(Shutdown("done"))

    with trio.fail_after(10):
        async with scripted(handler) as port:
            client, _ = await joined_client(port, "alice")
            assert await client.run() == Ending("shutdown", "done")
    assert got == [Pong("are you there")]


async def test_dead_link_is_noticed(autojump_clock: trio.abc.Clock) -> None:
    """A server that stops talking (a dead NAT mapping, say) is pinged, then given up on."""
    seen: list[Event | None] = []
    async with scripted(goes_silent(seen)) as port:
        client, saw = await joined_client(port, "alice")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            lost = await saw.wait_for(lambda e: isinstance(e, Lost))
            assert isinstance(lost, Lost) and "no answer from the server" in lost.reason
            assert trio.current_time() >= client_module.IDLE_PING_SECONDS
            client.quit_nowait()
    assert seen == [Ping("client")]


async def test_kicked_for_flooding_does_not_reconnect() -> None:
    async def handler(script: Script) -> None:
        await script.welcome()
        await script.send(Error("flooding", "disconnected for flooding the room"))

    with trio.fail_after(10):
        async with scripted(handler) as port:
            client, _ = await joined_client(port, "alice")
            ending = await client.run()
    assert ending == Ending("kicked", "disconnected for flooding the room")


# -- reconnecting --


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconnect, "RECONNECT_FIRST_DELAY", 0.01)
    monkeypatch.setattr(reconnect, "RECONNECT_MAX_DELAY", 0.05)


def test_backoff_doubles_then_caps() -> None:
    delays = [backoff(n) for n in range(1, reconnect.RECONNECT_TRIES + 1)]
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert max(delays) == reconnect.RECONNECT_MAX_DELAY
    assert sum(delays) < 60


async def test_server_restart_loses_nothing_typed(fast_reconnect: None) -> None:
    """The server dies without a word, comes back on the same port; lines typed meanwhile go."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            first = ChatServer(PASSWORD, limits=RELAXED)
            first_scope = trio.CancelScope()
            port = await nursery.start(_serve_until_cancelled, first, 0, first_scope)
            alice, saw = await joined_client(port, "alice")
            nursery.start_soon(alice.run)
            alice.say_nowait("before")
            await alice.wait_acknowledged()

            first_scope.cancel()  # no shutdown notice: the connection just ends
            await saw.wait_for(lambda e: isinstance(e, Lost))
            alice.say_nowait("during one")
            alice.say_nowait("during two")
            assert alice.pending == 2

            second = ChatServer(PASSWORD, limits=RELAXED)
            await nursery.start(second.serve, port, LOCAL)
            bob = await Peer.join(port, "bob")
            rejoined = await saw.wait_for(lambda e: isinstance(e, Joined))
            assert isinstance(rejoined, Joined) and rejoined.rejoined
            assert rejoined.welcome.name == "alice"
            await alice.wait_acknowledged()
            heard = [await bob.expect(Message) for _ in range(2)]
            assert [m.text for m in heard if isinstance(m, Message)] == ["during one", "during two"]
            assert alice_sent_once(saw, ["before", "during one", "during two"])
            await bob.aclose()
            second.shutdown_nowait("test over")
            nursery.cancel_scope.cancel()


def alice_sent_once(saw: Recorder, texts: list[str]) -> bool:
    own = [e.text for e in saw.events if isinstance(e, Message) and e.id is not None]
    return own == texts


async def _serve_until_cancelled(
    server: ChatServer,
    port: int,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await server.serve(port, LOCAL, task_status=task_status)


async def test_lost_echo_is_found_in_history(fast_reconnect: None) -> None:
    """A line the old connection delivered, whose echo never came, is not sent twice."""
    says: list[Event | None] = []

    async def first(script: Script) -> None:
        await script.welcome()
        says.append(await script.recv())  # delivered; the connection dies before the echo

    async def second(script: Script) -> None:
        await script.welcome()
        await script.send(
            Message(1, 1000.0, "bob", "old news"),  # seen before the break: not shown again
            Message(2, 2000.0, "alice", "delivered"),  # ours, from the lost connection
        )
        assert await script.recv() == Who()
        await script.send(Members(("alice", "bob")))
        says.append(await script.recv())
        await script.send(Message(3, 3000.0, "alice", "typed later", "x"))
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with scripted(first, second) as port:
            client, saw = await joined_client(port, "alice")
            client._handle(Message(1, 1000.0, "bob", "old news"))  # as if read before the break
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.run)
                line = client.say_nowait("delivered")
                await saw.wait_for(lambda e: isinstance(e, Lost))
                client.say_nowait("typed later")
                await saw.wait_for(lambda e: isinstance(e, Joined))
                echo = await saw.wait_for(is_text("delivered"))
                assert isinstance(echo, Message) and echo.id == line.id
                await saw.wait_for(lambda e: isinstance(e, Message) and e.seq == 3)
                nursery.cancel_scope.cancel()
    assert [type(s) for s in says] == [Say, Say]
    assert isinstance(says[1], Say) and says[1].text == "typed later"
    assert saw.texts().count("old news") == 1


async def test_gives_up_after_the_tries(autojump_clock: trio.abc.Clock) -> None:
    async def once(script: Script) -> None:
        await script.welcome()

    async with scripted(once) as port:
        client, saw = await joined_client(port, "alice")
        client.say_nowait("unsent")
        # Every later connection is accepted and closed at once, as ngrok does for a dead room.
        ending = await client.run()
    assert ending.why == "lost"
    assert ending.reason.startswith("could not reconnect after 8 tries: ")
    assert ending.unsent == ("unsent",)
    tries = [e for e in saw.events if isinstance(e, Lost)]
    assert [t.attempt for t in tries] == list(range(1, reconnect.RECONNECT_TRIES + 1))


async def test_wrong_password_on_rejoin_gives_up_at_once(fast_reconnect: None) -> None:
    async def once(script: Script) -> None:
        await script.welcome()

    async def refuse(script: Script) -> None:
        await script.recv()
        await script.send(Error("bad_password", "wrong password"))

    with trio.fail_after(10):
        async with scripted(once, refuse) as port:
            client, saw = await joined_client(port, "alice")
            ending = await client.run()
    assert ending.why == "lost" and "wrong password" in ending.reason
    assert len([e for e in saw.events if isinstance(e, Lost)]) == 1


async def test_quit_while_reconnecting(autojump_clock: trio.abc.Clock) -> None:
    async def once(script: Script) -> None:
        await script.welcome()

    async with scripted(once) as port:
        client, saw = await joined_client(port, "alice")
        async with trio.open_nursery() as nursery:
            endings: list[Ending] = []

            async def run() -> None:
                endings.append(await client.run())

            nursery.start_soon(run)
            await saw.wait_for(lambda e: isinstance(e, Lost))
            client.say_nowait("not yet sent")
            client.quit_nowait()
    assert endings == [Ending("quit", "you left", ("not yet sent",))]


async def test_quit_does_not_hang_on_a_server_that_stays_open(
    autojump_clock: trio.abc.Clock,
) -> None:
    got: list[Event | None] = []
    async with scripted(goes_silent(got)) as port:
        client, _ = await joined_client(port, "alice")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            client.quit_nowait()
        assert trio.current_time() <= client_module.QUIT_SECONDS + 1
    assert got == [Quit()]


async def test_name_held_by_the_old_connection_is_waited_for(
    autojump_clock: trio.abc.Clock,
) -> None:
    """After a silent drop the server may hold our name until its idle limit lets it go."""

    async def once(script: Script) -> None:
        await script.welcome()

    async def taken(script: Script) -> None:
        await script.recv()
        await script.send(Error("name_taken", "the name 'alice' is taken; pick another"))

    async def back(script: Script) -> None:
        await script.welcome()
        assert await script.recv() == Who()
        await script.send(Members(("alice",)))
        await trio.sleep_forever()

    held = [taken] * 15  # 15 tries, about 100 s: more than RECONNECT_TRIES
    async with scripted(once, *held, back) as port:
        client, saw = await joined_client(port, "alice")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            rejoined = await saw.wait_for(lambda e: isinstance(e, Joined))
            assert isinstance(rejoined, Joined) and rejoined.rejoined
            assert trio.current_time() < reconnect.NAME_HELD_SECONDS
            nursery.cancel_scope.cancel()


# -- chat features: names, requests, moderation --


def host(room: RoomFixture, command: str, target: str = "", reason: str = "") -> Event:
    """What the host's console does: a moderation command, as the host."""
    return room.server.rooms.default.moderation.command(
        HOST, Moderate(command, target, reason), by_host=True
    )


async def test_requests_and_what_the_client_keeps_current() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, saw = await joined_client(room.port, "alice")
            bob = await room.join("bob")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                await saw.wait_for(lambda e: isinstance(e, Join) and e.name == "bob")
                await bob.send(Away("lunch"))
                await saw.wait_for(lambda e: isinstance(e, WentAway))
                assert alice.roster.away == {"bob": "lunch"}
                host(room, "op", "alice")
                assert alice.request_nowait(SetTopic("movie night"))
                await saw.wait_for(lambda e: isinstance(e, Topic))
                assert alice.roster.topic == "movie night"
                assert alice.request_nowait(Nick("alicia"))
                renamed = await saw.wait_for(lambda e: isinstance(e, Renamed))
                assert renamed == Renamed("alice", "alicia", renamed.ts)  # type: ignore[union-attr]
                assert alice.roster.name == "alicia" and alice.roster.members == ["alicia", "bob"]
                assert alice.who_nowait()
                members = await saw.wait_for(lambda e: isinstance(e, Members))
                assert members == Members(("alicia", "bob"), (("bob", "lunch"),), ("alicia",))
                assert alice.roster.ops == {"alicia"}
                await bob.send(Back())
                await saw.wait_for(lambda e: isinstance(e, CameBack))
                assert alice.roster.away == {}
                # An operator hears of its own action once, though the room says it twice.
                assert alice.request_nowait(Moderate("mute", "bob"))
                await saw.wait_for(lambda e: isinstance(e, Notice) and "muted" in e.text)
                assert alice.request_nowait(Moderate("unmute", "bob"))
                await saw.wait_for(lambda e: isinstance(e, Notice) and "unmuted" in e.text)
                notices = [e for e in saw.events if isinstance(e, Notice)]
                assert [n.text for n in notices] == [
                    "host made alice an operator",
                    "alicia muted bob",
                    "alicia unmuted bob",
                ]
                nursery.cancel_scope.cancel()
            await bob.aclose()


async def test_private_lines_actions_and_refusals() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, saw = await joined_client(room.port, "alice")
            bob = await room.join("bob")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                host(room, "op", "alice")
                # A request refused with the same code as a private line is not taken for one.
                assert alice.request_nowait(Moderate("kick", "zed"))
                private = alice.say_nowait("psst", to="bob")
                lost = alice.say_nowait("anyone?", to="yan")
                action = alice.say_nowait("waves", action=True)
                await alice.wait_acknowledged()
                refused = [(e.line, e.error.code) for e in saw.events if isinstance(e, NotSent)]
                assert refused == [(lost, "no_such_member")]
                errors = [e for e in saw.events if isinstance(e, Error)]
                assert errors == [Error("no_such_member", "nobody called 'zed' is in the room")]
                echoes = {e.id: e for e in saw.events if isinstance(e, Message)}
                assert echoes[private.id].to == "bob"
                assert echoes[action.id].action and echoes[action.id].to is None
                heard = await bob.expect(Message)
                assert isinstance(heard, Message) and (heard.text, heard.to) == ("psst", "bob")
                nursery.cancel_scope.cancel()
            await bob.aclose()


async def test_muted_lines_count_as_refused_not_pending() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, saw = await joined_client(room.port, "alice")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                host(room, "mute", "alice")
                first = alice.say_nowait("let me speak")
                second = alice.say_nowait("psst", to="alice")
                await alice.wait_acknowledged()
                assert alice.pending == 0
                refused = [(e.line, e.error.code) for e in saw.events if isinstance(e, NotSent)]
                assert refused == [(first, "muted"), (second, "muted")]
                host(room, "unmute", "alice")
                alice.say_nowait("thanks")
                await saw.wait_for(is_text("thanks"))
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("command", "says", "leave"),
    [
        ("kick", "you were kicked by host: rude", "kicked: rude"),
        ("ban", "you were banned by host: rude", "banned: rude"),
    ],
)
async def test_kicked_or_banned_ends_the_run_without_reconnecting(
    fast_reconnect: None, command: str, says: str, leave: str
) -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, saw = await joined_client(room.port, "alice")
            async with trio.open_nursery() as nursery:
                endings: list[Ending] = []

                async def run() -> None:
                    endings.append(await alice.run())

                nursery.start_soon(run)
                alice.say_nowait("hello")
                await alice.wait_acknowledged()
                watcher = await Peer.open(room.port) if command == "kick" else None
                if watcher is not None:
                    await watcher.send(Hello("bob", PASSWORD))
                    await watcher.expect(Welcome)
                host(room, command, "alice", "rude")
            assert endings == [Ending("kicked", says)]
            assert not [e for e in saw.events if isinstance(e, Lost)], "no reconnecting"
            if watcher is not None:
                gone = await watcher.expect(Leave)
                assert gone == Leave("alice", leave, gone.ts)  # type: ignore[union-attr]
                await watcher.aclose()


async def test_a_ban_found_on_rejoin_ends_the_run(fast_reconnect: None) -> None:
    async def once(script: Script) -> None:
        await script.welcome()

    async def banned(script: Script) -> None:
        await script.recv()
        await script.send(Error("banned", "you are banned from this room: spam"))

    with trio.fail_after(10):
        async with scripted(once, banned) as port:
            client, saw = await joined_client(port, "alice")
            ending = await client.run()
    assert ending == Ending("kicked", "you are banned from this room: spam")
    assert len([e for e in saw.events if isinstance(e, Lost)]) == 1


async def test_our_new_name_is_the_one_we_rejoin_with(fast_reconnect: None) -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            first = ChatServer(PASSWORD, limits=RELAXED)
            first_scope = trio.CancelScope()
            port = await nursery.start(_serve_until_cancelled, first, 0, first_scope)
            alice, saw = await joined_client(port, "alice")
            nursery.start_soon(alice.run)
            assert alice.request_nowait(Nick("Alicia B"))
            await saw.wait_for(lambda e: isinstance(e, Renamed))
            assert alice.roster.name == "Alicia B"

            first_scope.cancel()
            await saw.wait_for(lambda e: isinstance(e, Lost))
            assert not alice.request_nowait(Nick("late")), "not connected: refused at once"
            alice.say_nowait("back again")
            second = ChatServer(PASSWORD, limits=RELAXED)
            await nursery.start(second.serve, port, LOCAL)
            bob = await Peer.join(port, "bob")
            rejoined = await saw.wait_for(lambda e: isinstance(e, Joined))
            assert isinstance(rejoined, Joined) and rejoined.welcome.name == "Alicia B"
            heard = await bob.expect(Message)
            assert isinstance(heard, Message) and heard.sender == "Alicia B"
            await bob.aclose()
            second.shutdown_nowait("test over")
            nursery.cancel_scope.cancel()


async def test_a_rejoin_resumes_what_was_said_meanwhile(fast_reconnect: None) -> None:
    """`hello {since}` on every rejoin: "while you were away: N", then those N, in order."""
    async with start_room(RELAXED) as room:
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                alice, saw = await joined_client(room.port, "alice")
                nursery.start_soon(alice.run)
                bob = await room.join("bob")
                await bob.say("before", "0")
                await saw.wait_for(is_text("before"))
                moderation = room.server.rooms.default.moderation
                moderation.command(HOST, Moderate("lock"), by_host=True)  # rejoins wait
                (session,) = [
                    s
                    for s in room.server.ctx.sessions
                    if getattr(s, "member", None) and s.member.name == "alice"
                ]  # type: ignore[attr-defined]
                session.kick("the train entered a tunnel")  # type: ignore[attr-defined]
                await saw.wait_for(lambda e: isinstance(e, Lost))
                for i in range(3):
                    await bob.say(f"meanwhile {i}", str(i + 1))
                moderation.command(HOST, Moderate("unlock"), by_host=True)
                rejoined = await saw.wait_for(lambda e: isinstance(e, Joined) and e.rejoined)
                await saw.wait_for(is_text("meanwhile 2"))
                after = saw.events[saw.events.index(rejoined) + 1 :]
                alice.quit_nowait()
    assert isinstance(rejoined, Joined) and rejoined.missed == 3
    texts = [e.text for e in after if isinstance(e, Message)]
    assert texts == ["meanwhile 0", "meanwhile 1", "meanwhile 2"], "each once, in order"
    assert saw.texts().count("before") == 1, "nothing twice at the seam"
