"""The client among rooms: `--room`, an invite's room, `/rooms` and `/join`, and a rejoin that
goes back to the room the member was in. The real server; pipe mode in a subprocess."""

from __future__ import annotations

import pytest
import trio
from test_client import Recorder, fast_reconnect, is_text
from test_pipe import LOCAL, run

from chatpeer import PASSWORD, RELAXED, start_room
from multichat.client.address import Address
from multichat.client.commands import Ask, parse
from multichat.client.connection import ChatClient
from multichat.client.login import LoginRefused
from multichat.client.updates import Joined, Lost
from multichat.protocol.events import JoinRoom, ListRooms, Message, RoomInfo, RoomList

__all__ = ["fast_reconnect"]  # a fixture, used by name


def test_rooms_and_join_are_typed_requests() -> None:
    assert parse("/rooms") == Ask(ListRooms())
    assert parse("/join games") == Ask(JoinRoom("games"))


async def client(
    address: Address, name: str, room: str | None = None
) -> tuple[ChatClient, Recorder]:
    saw = Recorder()
    chat = ChatClient(address, name, PASSWORD, saw, room=room)
    await chat.join()
    return chat, saw


async def test_join_moves_the_client_and_a_line_typed_before_stays_in_its_room() -> None:
    async with start_room(RELAXED, room="den", rooms=("games",)) as room:
        with trio.fail_after(10):
            carol = await room.join("carol", room="games")
            alice, saw = await client(Address(LOCAL, room.port), "alice")
            assert alice.roster.room == "den"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                alice.say_nowait("last in den")
                assert alice.request_nowait(JoinRoom("games"))
                moved = await saw.wait_for(lambda e: isinstance(e, Joined) and e.moved)
                assert alice.roster.room == "games" and alice.roster.members == ["carol", "alice"]
                alice.say_nowait("first in games")
                heard = await carol.expect(Message)
                assert alice.request_nowait(ListRooms())
                listing = await saw.wait_for(lambda e: isinstance(e, RoomList))
                await alice.wait_acknowledged()
                alice.quit_nowait()
    before = saw.events[: saw.events.index(moved)]
    assert any(isinstance(e, Message) and e.text == "last in den" and e.id for e in before)
    assert isinstance(moved, Joined) and moved.welcome.room == "games"
    assert isinstance(heard, Message) and heard.text == "first in games"
    assert listing == RoomList((RoomInfo("den", 0), RoomInfo("games", 2)))
    await carol.aclose()


async def test_a_rejoin_goes_back_to_the_room_the_member_moved_to(fast_reconnect: None) -> None:
    async with start_room(RELAXED, room="den", rooms=("games",)) as room:
        with trio.fail_after(15):
            carol = await room.join("carol", room="games")
            alice, saw = await client(Address(LOCAL, room.port), "alice")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                alice.request_nowait(JoinRoom("games"))
                await saw.wait_for(lambda e: isinstance(e, Joined) and e.moved)
                await carol.say("before", "c0")
                await saw.wait_for(is_text("before"))
                (session,) = [
                    s
                    for s in room.server.ctx.sessions
                    if getattr(s, "member", None) and s.member.name == "alice"  # type: ignore[attr-defined]
                ]
                session.kick("the train entered a tunnel")  # type: ignore[attr-defined]
                await saw.wait_for(lambda e: isinstance(e, Lost))
                await carol.say("meanwhile", "c1")
                rejoined = await saw.wait_for(lambda e: isinstance(e, Joined) and e.rejoined)
                await saw.wait_for(is_text("meanwhile"))
                alice.quit_nowait()
    assert isinstance(rejoined, Joined) and rejoined.welcome.room == "games"
    assert saw.texts().count("before") == 1 and saw.texts().count("meanwhile") == 1
    await carol.aclose()


async def test_an_invites_room_is_joined_and_a_renamed_first_room_still_lets_it_in() -> None:
    async with start_room(RELAXED, room="den", rooms=("games",)) as room:
        with trio.fail_after(10):
            invited, _ = await client(Address(LOCAL, room.port, room="games"), "ann")
            stale, _ = await client(Address(LOCAL, room.port, room="old name"), "bob")
            with pytest.raises(LoginRefused) as refused:
                await client(Address(LOCAL, room.port), "cy", room="old name")
    assert invited.roster.room == "games"
    assert stale.roster.room == "den", "the invite's room is gone: the server's first room"
    assert refused.value.code == "no_such_room"


async def test_pipe_mode_lists_rooms_and_moves() -> None:
    async with start_room(RELAXED, room="den", rooms=("games",)) as room:
        with trio.fail_after(30):
            carol = await room.join("carol", room="den")
            done = await run(
                f"{LOCAL}:{room.port}",
                "--name",
                "alice",
                "--plain",
                "--room",
                "GAMES",
                stdin=b"/rooms\n/join den\nhello den\n/join nowhere\n",
                MULTICHAT_PASSWORD=PASSWORD,
            )
            heard = await carol.expect(Message)
    out = done.stdout.decode()
    assert done.returncode == 0, done
    assert out.startswith("* Welcome to games, alice! Online (1): alice\n")
    assert "* Rooms (2):\n*   den (1 online)\n*   games (1 online)\n" in out
    assert "* Welcome to den, alice! Online (2): carol, alice\n" in out
    assert "! there is no room called 'nowhere' here; /rooms lists them\n" in out
    assert isinstance(heard, Message) and heard.text == "hello den"


async def test_connect_to_a_room_that_is_not_there_exits_3_in_one_line() -> None:
    async with start_room(RELAXED, room="den") as room:
        done = await run(
            f"{LOCAL}:{room.port}",
            "--name",
            "alice",
            "--plain",
            "--room",
            "nowhere",
            MULTICHAT_PASSWORD=PASSWORD,
        )
    assert done.returncode == 3
    assert done.stderr == b"multichat: there is no room called 'nowhere' here; /rooms lists them\n"


async def test_a_link_to_a_room_joins_it_and_one_not_there_exits_3() -> None:
    """`connect https://HOST/#room=NAME`, as the page reads it: asked for as --room is."""
    async with start_room(RELAXED, room="den", rooms=("games",)) as room:
        link = f"http://{LOCAL}:{room.port}/"
        with trio.fail_after(30):
            joined = await run(
                f"{link}#room=GAMES", "--name", "ann", "--plain", MULTICHAT_PASSWORD=PASSWORD
            )
            missing = await run(
                f"{link}#room=nowhere", "--name", "bob", "--plain", MULTICHAT_PASSWORD=PASSWORD
            )
    assert joined.returncode == 0, joined
    assert joined.stdout.decode().startswith("* Welcome to games, ann! Online (1): ann\n")
    assert missing.returncode == 3
    assert (
        missing.stderr == b"multichat: there is no room called 'nowhere' here; /rooms lists them\n"
    )
