"""Rooms: one server, several rooms, each with its own members, log, moderation and history.

The real server on a loopback port, real sockets, as members (JSON, WebSocket, plain text) and
the host (the control token) see it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, WsPeer, host_command, read_until
from chatpeer import start_room as start_server
from multichat.protocol.events import (
    ConnectionClosed,
    Error,
    Event,
    Hello,
    Join,
    JoinRoom,
    Leave,
    ListRooms,
    Members,
    Message,
    Moderate,
    Nick,
    Notice,
    RoomInfo,
    RoomList,
    Say,
    SetTopic,
    Shutdown,
    Status,
    Topic,
    Welcome,
    Who,
)
from multichat.protocol.names import room_key
from multichat.server.history import HistoryStore
from multichat.server.limits import Limits
from multichat.server.listeners import ChatServer
from multichat.server.moderation import HOST

STEP = 10
TOKEN = "control-token"


@asynccontextmanager
async def start_room(
    *, limits: Limits = RELAXED, rooms: tuple[str, ...] = ("games",), **kwargs: object
) -> AsyncIterator[RoomFixture]:
    """A server whose first room is `den`, with `rooms` beside it."""
    async with start_server(
        limits, room="den", rooms=rooms, control_token=TOKEN, **kwargs
    ) as fixture:
        yield fixture


async def until(peer: Peer, kind: type[Event]) -> list[Event]:
    """Every event up to and including the first of `kind`."""
    seen: list[Event] = []
    while True:
        event = await peer.next_event()
        assert not isinstance(event, ConnectionClosed), f"closed before {kind}: {seen}"
        seen.append(event)
        if isinstance(event, kind):
            return seen


async def refused(port: int, hello: Hello) -> Error:
    peer = await Peer.open(port)
    await peer.send(hello)
    answer = await peer.next_event()
    assert isinstance(answer, Error), answer
    assert isinstance(await peer.next_event(), ConnectionClosed)
    await peer.aclose()
    return answer


async def moved(peer: Peer, room: str) -> Welcome:
    await peer.send(JoinRoom(room))
    welcome = (await until(peer, Welcome))[-1]
    assert isinstance(welcome, Welcome)
    return welcome


# -- each room is its own world --


async def test_two_rooms_are_isolated_from_each_other() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob", room="games")
            assert alice.welcome is not None and alice.welcome.room == "den"
            assert bob.welcome is not None and bob.welcome.room == "games"
            assert bob.welcome.members == ("bob",), "nobody from den in games' welcome"
            dan = await room.join("dan")
            await alice.expect(Join)
            await alice.say("den only", "a1")
            await bob.say("games only", "b1")
            mine = await alice.expect(Message)
            theirs = await bob.expect(Message)
            heard = await dan.expect(Message)
            await bob.send(Who())
            members = await bob.expect(Members)
    assert isinstance(mine, Message) and isinstance(theirs, Message)
    assert (mine.seq, theirs.seq) == (1, 1), "each room numbers its own messages"
    assert isinstance(heard, Message) and heard.text == "den only"
    assert isinstance(members, Members) and members.names == ("bob",)


async def test_a_hello_without_a_room_lands_in_the_first_and_room_names_fold() -> None:
    async with start_room(rooms=("Board Games",)) as room:
        with trio.fail_after(STEP):
            first = await room.join("alice")
            folded = await room.join("bob", room="ｂｏａｒｄ games")  # fullwidth, other case
    assert first.welcome is not None and first.welcome.room == "den"
    assert folded.welcome is not None and folded.welcome.room == "Board Games"


async def test_names_are_unique_across_rooms() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")  # kept: a peer let go closes its socket
            taken = await refused(room.port, Hello("ALICE", PASSWORD, room="games"))
            bob = await room.join("bob", room="games")
            await bob.send(Nick("аlice"))  # Cyrillic a: the same name
            renamed = await bob.expect(Error)
    assert taken.code == "name_taken"
    assert isinstance(renamed, Error) and renamed.code == "name_taken"
    await alice.aclose()


async def test_rooms_lists_every_room_with_its_count_and_topic() -> None:
    async with start_room(rooms=("games", "quiet")) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            others = [await room.join(name, room="games") for name in ("bob", "carol")]
            room.server.rooms.default.moderation.command(
                HOST, Moderate("op", "alice"), by_host=True
            )
            await alice.send(SetTopic("movie night"))
            await alice.expect(Topic)
            await alice.send(ListRooms())
            listing = await alice.expect(RoomList)
    assert listing == RoomList(
        (RoomInfo("den", 1, "movie night"), RoomInfo("games", 2), RoomInfo("quiet", 0))
    )
    assert len(others) == 2


# -- moving --


async def test_join_moves_a_member_leave_there_join_here_and_the_new_room_history() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            bob = await room.join("bob")
            carol = await room.join("carol", room="games")
            await carol.say("gg", "c1")
            await carol.expect(Message)
            alice = await room.join("alice")
            await bob.expect(Join)
            await alice.say("brb", "a1")
            await alice.send(JoinRoom("games"))
            seen = await until(alice, Welcome)
            history = await until(alice, Message)
            left = await bob.expect(Leave)
            came = await carol.expect(Join)
            await alice.say("hi games", "a2")
            heard = await carol.expect(Message)
            await bob.say("still here", "b1")
            echo = await alice.expect(Message)
            await bob.expect(Message)
    # After den's history (bob's join), the line said before the move is acknowledged in the
    # old room, before the welcome.
    assert [type(e) for e in seen] == [Join, Message, Welcome]
    assert isinstance(seen[1], Message) and (seen[1].id, seen[1].seq) == ("a1", 1)
    welcome = seen[-1]
    assert isinstance(welcome, Welcome)
    assert (welcome.room, welcome.members, welcome.seq) == ("games", ("carol", "alice"), 1)
    assert history == [Join("carol", history[0].ts), Message(1, history[1].ts, "carol", "gg")]  # type: ignore[union-attr]
    assert left == Leave("alice", "went to games", left.ts)  # type: ignore[union-attr]
    assert isinstance(came, Join) and came.name == "alice"
    assert isinstance(heard, Message) and (heard.text, heard.seq) == ("hi games", 2)
    assert isinstance(echo, Message) and echo.id == "a2", "nothing more from den"


async def test_a_move_that_cannot_happen_is_an_error_and_the_member_stays() -> None:
    async with start_room(rooms=("games", "locked")) as room:
        server = room.server
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            server.ctx.rooms.get("locked").moderation.locked = True  # type: ignore[union-attr]
            answers: dict[str, Event] = {}
            for name in ("nowhere", "", "den\u202e", "x" * 40, "locked", "den"):
                await alice.send(JoinRoom(name))
                answers[name] = await alice.next_event()
            await alice.say("still in den", "a1")
            echo = await alice.expect(Message)
    codes = {name: getattr(answer, "code", None) for name, answer in answers.items()}
    assert codes == {
        "nowhere": "no_such_room",
        "": "bad_room",
        "den\u202e": "bad_room",
        "x" * 40: "bad_room",
        "locked": "locked",
        "den": None,
    }
    assert isinstance(answers["nowhere"], Error)
    assert answers["nowhere"].message == "there is no room called 'nowhere' here; /rooms lists them"
    assert answers["den"] == Notice("you are in den already", answers["den"].ts)  # type: ignore[union-attr]
    assert isinstance(echo, Message) and echo.seq == 1


async def test_bad_room_names_in_a_hello_are_one_line_errors() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            answers = [
                await refused(room.port, Hello("alice", PASSWORD, room=name))
                for name in ("", "den\x1b[2J", "nowhere")
            ]
    assert [a.code for a in answers] == ["bad_room", "bad_room", "no_such_room"]
    for answer in answers:
        assert "\n" not in answer.message and "Traceback" not in answer.message
    assert answers[0].message == "room name is empty"


async def test_a_websocket_member_moves_too() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            ws = await WsPeer.join(room.port, "wendy")
            carol = await room.join("carol", room="games")
            welcome = await moved(ws, "games")
            await ws.say("over here", "w1")
            heard = await carol.expect(Message)
    assert welcome.room == "games" and welcome.members == ("carol", "wendy")
    assert isinstance(heard, Message) and heard.sender == "wendy"


async def test_plain_text_lists_rooms_and_moves() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            carol = await room.join("carol", room="games")
            stream = await trio.open_tcp_stream("127.0.0.1", room.port)
            buf = bytearray()
            await stream.send_all(b"correct horse\n")
            await read_until(stream, b"Name: ", buf)
            await stream.send_all(b"nc user\n")
            await read_until(stream, b"Welcome to den, nc user!", buf)
            await stream.send_all(b"/rooms\n")
            listing = await read_until(stream, b"games (1 online)\n", buf)
            await stream.send_all(b"/join games\n")
            await read_until(
                stream, b"Welcome to games, nc user! Online (2): carol, nc user\n", buf
            )
            await stream.send_all(b"hello games\n")
            heard = await carol.expect(Message)
            await stream.aclose()
    assert b"* Rooms (2):\n*   den (1 online)\n" in listing
    assert isinstance(heard, Message) and heard.text == "hello games"


# -- open rooms --


async def test_without_open_rooms_only_the_host_makes_rooms() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            await alice.send(JoinRoom("new"))
            error = await alice.expect(Error)
            room.server.rooms.add_nowait("new")  # the console's `room add new`
            welcome = await moved(alice, "new")
    assert isinstance(error, Error) and error.code == "no_such_room"
    assert welcome.room == "new"


async def test_with_open_rooms_a_member_makes_one_up_to_max_rooms() -> None:
    async with start_room(limits=RELAXED.replace(max_rooms=3), open_rooms=True) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            welcome = await moved(alice, "Party")
            bob = await room.join("bob", room="party")  # in a hello too
            await alice.expect(Join)
            await bob.send(JoinRoom("one too many"))
            error = await bob.expect(Error)
            late = await refused(room.port, Hello("carol", PASSWORD, room="another"))
            await bob.send(ListRooms())
            listing = await bob.expect(RoomList)
    assert welcome.room == "Party" and welcome.members == ("alice",)
    assert isinstance(error, Error) and error.code == "too_many_rooms"
    assert late.code == "too_many_rooms"
    assert isinstance(listing, RoomList)
    assert [r.name for r in listing.rooms] == ["den", "games", "Party"]


async def test_a_room_is_made_only_once_a_visitor_showed_the_password() -> None:
    async with start_room(open_rooms=True) as room:
        with trio.fail_after(STEP):
            wrong = await refused(room.port, Hello("mallory", "guess", room="spam"))
    assert wrong.code == "bad_password"
    assert room.server.rooms.get("spam") is None


# -- moderation is per room --


async def test_operators_bans_mutes_and_locks_are_per_room() -> None:
    async with start_room() as room:
        server = room.server
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob", room="games")
            den = server.rooms.default.moderation
            den.command(HOST, Moderate("op", "alice"), by_host=True)
            await alice.send(Moderate("kick", "bob"))
            not_here = await alice.expect(Error)
            await alice.send(Moderate("lock"))
            await alice.expect(Notice)
            # A locked den keeps newcomers out of den, not out of games.
            locked = await refused(room.port, Hello("carol", PASSWORD))
            carol = await room.join("carol", room="games")
            # The host mutes carol: in games, the room she is in.
            muted = await host_command(room.port, TOKEN, "mute", "carol")
            await carol.say("can I?")
            refusal = await carol.expect(Error)
            await bob.say("I can", "b1")
            await bob.expect(Message)
            # A ban in games by address: games refuses it, den does not.
            banned = await host_command(room.port, TOKEN, "ban", "127.0.0.1", "--room", "games")
            bob_told = await bob.expect(Error)
            back = await refused(room.port, Hello("bob", PASSWORD, room="games"))
            await alice.send(Moderate("unlock"))
            await alice.expect(Notice)
            dave = await room.join("dave")
            await alice.send(JoinRoom("games"))
            not_in = await alice.expect(Error)
    assert isinstance(not_here, Error) and not_here.code == "no_such_member"
    assert locked.code == "locked"
    assert isinstance(muted, Notice) and muted.text == "host muted carol"
    assert isinstance(refusal, Error) and refusal.code == "muted"
    assert isinstance(banned, Notice) and "banned 127.0.0.1" in banned.text
    assert isinstance(bob_told, Error) and bob_told.code == "banned"
    assert back.code == "banned"
    assert dave.welcome is not None and dave.welcome.room == "den"
    assert isinstance(not_in, Error) and not_in.code == "banned"


async def test_the_hosts_commands_name_their_room_or_find_the_member() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            bob = await room.join("bob", room="games")
            kicked = await host_command(room.port, TOKEN, "kick", "bob", "bye")
            told = await bob.expect(Error)
            nowhere = await host_command(room.port, TOKEN, "lock", "--room", "attic")
            bad = await host_command(room.port, TOKEN, "lock", "--room", "")
            locked = await host_command(room.port, TOKEN, "lock", "--room", "GAMES")
    assert isinstance(kicked, Notice) and kicked.text == "host kicked bob (bye)"
    assert isinstance(told, Error) and told.code == "kicked"
    assert isinstance(nowhere, Error) and nowhere.code == "no_such_room"
    assert isinstance(bad, Error) and bad.code == "bad_room"
    assert isinstance(locked, Notice)
    assert room.server.rooms.get("games").moderation.locked  # type: ignore[union-attr]
    assert not room.server.rooms.default.moderation.locked


async def test_a_private_message_reaches_only_its_own_room() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob", room="games")
            await alice.send(Say("psst", "p1", to="bob"))
            error = await alice.expect(Error)
    assert isinstance(error, Error) and error.code == "no_such_member"
    assert error.message == "'bob' is in games, not this room"
    await bob.aclose()


# -- the host's view, and the end --


async def test_status_lists_every_room_with_its_members_and_topic() -> None:
    async with start_room() as room:
        with trio.fail_after(STEP):
            peers = [
                await room.join("alice"),
                await room.join("bob", room="games"),
                await room.join("carol", room="games"),
            ]
            room.server.rooms.get("games").room.topic = "chess"  # type: ignore[union-attr]
            status = await host_command(room.port, TOKEN, "status")
    assert isinstance(status, Status)
    assert (status.room, status.members) == ("den", ("alice", "bob", "carol"))
    assert status.rooms == (
        RoomInfo("den", 1, "", ("alice",)),
        RoomInfo("games", 2, "chess", ("bob", "carol")),
    )
    assert len(peers) == 3


async def test_shutdown_reaches_every_member_of_every_room() -> None:
    async with start_room(rooms=("games", "quiet")) as room:
        with trio.fail_after(STEP):
            peers = [
                await room.join("alice"),
                await room.join("bob", room="games"),
                await WsPeer.join(room.port, "wendy", room="games"),
            ]
            await peers[1].say("last words", "b1")
            await peers[1].expect(Message)
            room.server.shutdown_nowait("good night")
            endings = [await peer.expect(Shutdown) for peer in peers]
            await room.server.stopped.wait()
    assert endings == [Shutdown("good night")] * 3


# -- history and resume, room by room --


def stores(tmp_path: Path) -> tuple[HistoryStore, Callable[[str], HistoryStore]]:
    """The first room's store, and how the server opens every other room's (as the data
    directory does: one file per room key)."""

    def open_history(name: str) -> HistoryStore:
        path = tmp_path / "rooms" / room_key(name)
        path.mkdir(parents=True, exist_ok=True)
        return HistoryStore.open(path / "history.sqlite3")

    return HistoryStore.open(tmp_path / "history.sqlite3"), open_history


async def test_each_rooms_history_survives_a_restart_and_resume_returns_to_its_room(
    tmp_path: Path,
) -> None:
    first, open_history = stores(tmp_path)
    opened: list[HistoryStore] = []

    def keep(name: str) -> HistoryStore:
        opened.append(open_history(name))
        return opened[-1]

    async with start_room(history=first, room_history=keep, open_rooms=True) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            await alice.say("in den", "a1")
            # At once: the echo waits for den's history, and still comes before attic's welcome.
            await alice.send(JoinRoom("attic"))  # made by alice, kept in rooms/attic
            seen = await until(alice, Welcome)
            for n in range(3):
                await alice.say(f"attic {n}", f"x{n}")
                await alice.expect(Message)
    for store in [first, *opened]:
        store.close()

    first, open_history = stores(tmp_path)
    opened.clear()
    async with start_room(history=first, room_history=keep, open_rooms=True) as room:
        with trio.fail_after(STEP):
            den = await room.join("dan")
            den_history = await until(den, Message)
            # alice comes back where she was, having seen attic's message 1.
            back = await Peer.open(room.port)
            await back.send(Hello("alice", PASSWORD, since=1, room="attic"))
            welcome = await back.next_event()
            replayed = [await back.expect(Message) for _ in range(2)]
    for store in [first, *opened]:
        store.close()
    assert [(type(e), getattr(e, "id", None)) for e in seen] == [(Message, "a1"), (Welcome, None)]
    assert isinstance(den_history[-1], Message) and den_history[-1].text == "in den"
    assert isinstance(welcome, Welcome) and (welcome.room, welcome.seq) == ("attic", 3)
    assert [m.text for m in replayed if isinstance(m, Message)] == ["attic 1", "attic 2"]


async def test_bans_of_a_room_outlive_a_restart_in_that_room_only(tmp_path: Path) -> None:
    first, open_history = stores(tmp_path)
    games = open_history("games")
    async with start_room(history=first, room_history=lambda name: games) as room:
        with trio.fail_after(STEP):
            await host_command(room.port, TOKEN, "ban", "127.0.0.1", "--room", "games")
    first.close()
    games.close()
    first, open_history = stores(tmp_path)
    games = open_history("games")
    async with start_room(history=first, room_history=lambda name: games) as room:
        with trio.fail_after(STEP):
            banned = await refused(room.port, Hello("bob", PASSWORD, room="games"))
            den = await room.join("bob")
    first.close()
    games.close()
    assert banned.code == "banned"
    assert den.welcome is not None and den.welcome.room == "den"


def test_the_servers_rooms_are_checked_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="room name is empty"):
        ChatServer(PASSWORD, room="")
    with pytest.raises(ValueError, match="already"):
        ChatServer(PASSWORD, room="den", rooms=("DEN",))
    with pytest.raises(ValueError, match="2 rooms, its most"):
        ChatServer(PASSWORD, room="a", rooms=("b", "c"), limits=Limits(max_rooms=2))
