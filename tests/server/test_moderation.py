"""Moderation: operators, kick, ban, mute, lock, and the host's commands by control token."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, host_command, read_until, start_room
from multichat.protocol.events import (
    BanList,
    ConnectionClosed,
    Error,
    Hello,
    Leave,
    Message,
    Moderate,
    Nick,
    Notice,
    Renamed,
    Say,
)
from multichat.protocol.proxy import Command, Family, ProxyHeader, build_v2
from multichat.server.entries import Dialect
from multichat.server.limits import Limits
from multichat.server.listeners import ChatServer
from multichat.server.moderation import Moderation
from multichat.server.room import Room
from roomoutlet import RecordingOutlet

STEP = 10
TOKEN = "host-token"


async def host(room: RoomFixture, command: str, *args: str) -> object:
    return await host_command(room.port, TOKEN, command, *args)


async def closed_with(peer: Peer, code: str) -> None:
    error = await peer.expect(Error)
    assert isinstance(error, Error) and error.code == code, error
    assert isinstance(await peer.next_event(), ConnectionClosed)


async def test_the_host_kicks_and_everyone_sees_why() -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            bob = await room.join("bob")
            answer = await host(room, "kick", "bob", "being", "rude")
            await closed_with(bob, "kicked")
            leave = await alice.expect(Leave)
    assert isinstance(answer, Notice) and "host kicked bob (being rude)" in answer.text
    assert isinstance(leave, Leave) and leave.reason == "kicked: being rude"


async def test_a_ban_keeps_the_address_out_before_any_password() -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            await room.join("alice")
            bob = await room.join("bob")
            answer = await host(room, "ban", "bob", "--for", "1h", "spam")
            await closed_with(bob, "banned")
            again = await Peer.open(room.port)
            await again.send(Hello("bob2", "wrong password"))
            refused = await again.next_event()
            bans = await host(room, "bans")
            lifted = await host(room, "unban", "bob")
            back = await room.join("bob")
    assert isinstance(answer, Notice) and "for 1h" in answer.text
    assert isinstance(refused, Error) and refused.code == "banned", "banned, not bad_password"
    assert "until" in refused.message and "spam" in refused.message
    assert isinstance(bans, BanList) and [b.name for b in bans.bans] == ["bob"]
    assert isinstance(lifted, Notice)
    assert back.welcome is not None


async def test_a_ban_through_the_tunnel_bans_the_real_address_only() -> None:
    server = ChatServer(PASSWORD, limits=Limits(), control_token=TOKEN)

    async def from_(source: str, name: str) -> Peer:
        assert server.proxy_port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", server.proxy_port)
        header = ProxyHeader(2, Command.PROXY, Family.INET, (source, 4000), ("127.0.0.1", 5002))
        await stream.send_all(build_v2(header))
        peer = Peer(stream)
        await peer.send(Hello(name, PASSWORD))
        return peer

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.serve, 0, "127.0.0.1", proxy_port=0))
        with trio.fail_after(STEP):
            troll = await from_("203.0.113.66", "troll")
            await troll.next_event()
            friend = await from_("198.51.100.7", "friend")
            await friend.next_event()
            assert server.port is not None
            answer = server.rooms.default.moderation.command(
                "host", Moderate("ban", "troll"), by_host=True
            )
            await closed_with(troll, "banned")
            again = await from_("203.0.113.66", "troll2")
            refused = await again.next_event()
            await friend.say("still here", "f")
            echo = await friend.expect(Message)
        server.shutdown_nowait("test over")
    assert isinstance(answer, Notice) and "203.0.113.66" in answer.text
    assert isinstance(refused, Error) and refused.code == "banned"
    assert isinstance(echo, Message) and echo.id == "f"


async def test_operators_moderate_from_the_chat_and_others_may_not(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await bob.send(Moderate("kick", "alice"))
        denied = await bob.expect(Error)
        room.server.rooms.default.moderation.command("host", Moderate("op", "alice"), by_host=True)
        await alice.expect(Notice)
        await alice.send(Moderate("kick", "alice"))
        self_kick = await alice.expect(Error)
        await alice.send(Moderate("kick", "nobody"))
        unknown = await alice.expect(Error)
        await alice.send(Moderate("kick", "bob", "bye"))
        notice = await alice.expect(Notice)
        await closed_with(bob, "kicked")
    assert isinstance(denied, Error) and denied.code == "not_allowed"
    assert isinstance(self_kick, Error) and self_kick.code == "not_allowed"
    assert isinstance(unknown, Error) and unknown.code == "no_such_member"
    assert isinstance(notice, Notice) and "alice kicked bob (bye)" in notice.text


async def test_a_muted_member_reads_but_cannot_say_until_the_time_is_up(
    autojump_clock: object,
) -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        alice = await room.join("alice")
        bob = await room.join("bob")
        room.server.rooms.default.moderation.command(
            "host", Moderate("mute", "bob", seconds=60), by_host=True
        )
        await bob.expect(Notice)
        await bob.say("let me talk", "1")
        muted = await bob.expect(Error)
        await bob.send(Say("psst", "2", to="alice"))
        also = await bob.expect(Error)
        await alice.say("bob can still read this", "a")
        seen = await bob.expect(Message)
        await trio.sleep(61)  # under the idle ping: these peers do not answer pings
        await bob.say("free again", "3")
        echo = await bob.expect(Message)
    assert isinstance(muted, Error) and muted.code == "muted" and "1m more" in muted.message
    assert isinstance(also, Error) and also.code == "muted"
    assert isinstance(seen, Message) and seen.sender == "alice"
    assert isinstance(echo, Message) and echo.id == "3"


async def test_a_locked_room_keeps_newcomers_out_and_members_in() -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            alice = await room.join("alice")
            await host(room, "lock")
            await alice.expect(Notice)
            late = await Peer.open(room.port)
            await late.send(Hello("late", PASSWORD))
            refused = await late.next_event()
            await alice.say("still in", "a")
            echo = await alice.expect(Message)
            await host(room, "unlock")
            welcome = await room.join("late")
    assert isinstance(refused, Error) and refused.code == "locked"
    assert isinstance(echo, Message)
    assert welcome.welcome is not None


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("ban", "bob", "--for", "10x"), "bad_command"),
        (("kick",), "bad_command"),
        (("kick", "nobody"), "no_such_member"),
        (("unban", "198.51.100.1"), "no_such_ban"),
        (("explode", "bob"), "bad_command"),
    ],
)
async def test_a_bad_host_command_is_one_clear_error(args: tuple[str, ...], code: str) -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        with trio.fail_after(STEP):
            answer = await host(room, args[0], *args[1:])
            await room.join("fine")  # and the room goes on
    assert isinstance(answer, Error) and answer.code == code


async def test_a_plain_text_operator_kicks_by_typing(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        bob = await room.join("bob")
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        await stream.send_all(f"{PASSWORD}\nop-by-nc\n".encode())
        buffer = bytearray()
        await read_until(stream, b"tata to leave.\n", buffer)
        room.server.rooms.default.moderation.command(
            "host", Moderate("op", "op-by-nc"), by_host=True
        )
        await stream.send_all(b"/kick bob bye\n")
        await closed_with(bob, "kicked")
        seen = await read_until(stream, b"(bye)\n", buffer)
    assert b"op-by-nc kicked bob (bye)" in seen


async def test_a_mute_outlives_a_reconnect_and_a_rename(autojump_clock: object) -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        alice = await room.join("alice")
        bob = await room.join("bob")
        room.server.rooms.default.moderation.command("host", Moderate("mute", "bob"), by_host=True)
        await bob.aclose()
        await trio.testing.wait_all_tasks_blocked()
        again = await room.join("bob")
        await again.say("am I free?", "1")
        refused = await again.expect(Error)
        await again.send(Nick("robert"))
        await again.expect(Renamed)
        await again.say("and now?", "2")
        still = await again.expect(Error)
        await alice.say("alice was never muted", "a")
        echo = await alice.expect(Message)
    assert isinstance(refused, Error) and refused.code == "muted"
    assert isinstance(still, Error) and still.code == "muted"
    assert isinstance(echo, Message) and echo.id == "a", "same address, another friend"


async def test_a_mute_can_be_lifted_while_nobody_has_the_name(autojump_clock: object) -> None:
    async with start_room(RELAXED, control_token=TOKEN) as room:
        bob = await room.join("bob")
        await host(room, "mute", "bob")
        await bob.aclose()
        await trio.testing.wait_all_tasks_blocked()
        lifted = await host(room, "unmute", "Bob")
        nobody = await host(room, "unmute", "bob")  # lifted already: nothing to lift
        again = await room.join("bob")
        await again.say("free?", "1")
        echo = await again.expect(Message)
    assert isinstance(lifted, Notice) and lifted.text == "host unmuted Bob"
    assert isinstance(nobody, Error) and nobody.code == "no_such_member"
    assert isinstance(echo, Message) and echo.id == "1"


def test_mutes_taken_from_the_backplane_keep_their_time_and_expired_ones_are_dropped() -> None:
    now, monotonic = 1_000.0, 50.0
    room = Room("r", limits=Limits(), clock=lambda: now, monotonic=lambda: monotonic)
    moderation = Moderation(room, clock=lambda: now, monotonic=lambda: monotonic)
    moderation.restore([], False, {"bob": now + 60, "cat": None, "dan": now - 1})
    members = {
        name: room.join(
            name,
            dialect=Dialect.JSON,
            outlet=RecordingOutlet(),
            welcome=lambda display, names: b"welcome\n",
        )
        for name in ("bob", "cat", "dan")
    }
    bob, cat, dan = (moderation.muted(members[name]) for name in ("bob", "cat", "dan"))
    assert bob is not None and "1m more" in bob.message
    assert cat is not None and cat.message.startswith("you are muted: you can read")
    assert dan is None
    monotonic += 61
    assert moderation.muted(members["bob"]) is None
