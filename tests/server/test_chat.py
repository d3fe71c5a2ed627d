"""Private messages, /me, /nick, away, topic and help: the real server, real sockets."""

from __future__ import annotations

import pytest
import trio

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, read_until, start_room
from multichat.protocol.events import (
    Away,
    Back,
    CameBack,
    Error,
    Gap,
    Hello,
    Help,
    Join,
    Leave,
    Members,
    Message,
    Moderate,
    Nick,
    Notice,
    Renamed,
    Say,
    SetTopic,
    Topic,
    Welcome,
    WentAway,
    Who,
)
from multichat.server.chat import NICK_INTERVAL_SECONDS

STEP = 10


async def test_a_private_message_reaches_only_its_two_parties(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        bob = await room.join("bob")
        carol = await room.join("carol")
        await alice.send(Say("psst", "p1", to="BOB"))
        await alice.say("hello all", "a1")
        echo = await alice.expect(Message)
        got = await bob.expect(Message)
        public = await carol.expect(Message)
        after = await bob.expect(Message)
    assert isinstance(echo, Message) and (echo.to, echo.id, echo.text) == ("bob", "p1", "psst")
    assert isinstance(got, Message) and (got.to, got.id, got.sender) == ("bob", None, "alice")
    assert isinstance(public, Message) and public.text == "hello all", "carol never sees it"
    assert isinstance(after, Message) and after.seq > got.seq, "every member's seq still grows"


async def test_private_message_to_nobody_and_to_an_away_member(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await alice.send(Say("hi", to="nobody"))
        error = await alice.expect(Error)
        await bob.send(Away("lunch"))
        await alice.expect(WentAway)
        await alice.send(Say("are you there?", "q", to="bob"))
        await alice.expect(Message)
        auto = await alice.expect(WentAway)
    assert isinstance(error, Error) and error.code == "no_such_member"
    assert auto == WentAway("bob", "lunch")


async def test_me_is_an_action(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await alice.send(Say("waves", "w", action=True))
        seen = await bob.expect(Message)
    assert isinstance(seen, Message) and seen.action and seen.text == "waves"


async def test_nick_follows_the_name_rules_and_is_rate_limited(autojump_clock: object) -> None:
    async with start_room(RELAXED) as room:
        alice = await room.join("alice")
        bob = await room.join("bob")
        await alice.send(Nick("Bob"))
        taken = await alice.expect(Error)
        await alice.send(Nick("a\u202eb"))
        bad = await alice.expect(Error)
        await alice.send(Nick("alicia"))
        renamed = await bob.expect(Renamed)
        await alice.send(Nick("ally"))
        fast = await alice.expect(Error)
        await trio.sleep(NICK_INTERVAL_SECONDS)
        await alice.send(Nick("ally"))
        again = await bob.expect(Renamed)
        await bob.send(Who())
        members = await bob.expect(Members)
        await alice.say("still me", "s")
        echo = await alice.expect(Message)
    assert isinstance(taken, Error) and taken.code == "name_taken"
    assert isinstance(bad, Error) and bad.code == "bad_name"
    assert isinstance(renamed, Renamed) and (renamed.old, renamed.new) == ("alice", "alicia")
    assert isinstance(fast, Error) and fast.code == "too_fast"
    assert isinstance(again, Renamed) and again.new == "ally"
    assert isinstance(members, Members) and members.names == ("ally", "bob"), "join order kept"
    assert isinstance(echo, Message) and echo.sender == "ally"


async def test_away_back_and_who_shows_it(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await bob.send(Away("\x1blunch"))
        away = await alice.expect(WentAway)
        await alice.send(Who())
        members = await alice.expect(Members)
        await bob.send(Back())
        back = await alice.expect(CameBack)
    assert isinstance(away, WentAway) and away.text == "lunch", "no escape sequences"
    assert isinstance(members, Members) and members.away == (("bob", "lunch"),)
    assert back == CameBack("bob")


async def test_only_operators_set_the_topic_and_newcomers_see_it(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        await alice.send(SetTopic("plans"))
        refused = await alice.expect(Error)
        room.server.rooms.default.moderation.command("host", Moderate("op", "alice"), by_host=True)
        await alice.expect(Notice)
        await alice.send(SetTopic("plans for Saturday"))
        topic = await alice.expect(Topic)
        bob = await room.join("bob")
    assert isinstance(refused, Error) and refused.code == "not_allowed"
    assert topic == Topic("plans for Saturday", "alice")
    assert isinstance(bob.welcome, Welcome) and bob.welcome.topic == "plans for Saturday"


async def test_help_lists_the_commands_and_operators_see_theirs(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        await alice.send(Help())
        plain = await alice.expect(Notice)
        alice_member = room.server.room.find("alice")
        assert alice_member is not None
        alice_member.op = True
        await alice.send(Help())
        op = await alice.expect(Notice)
    assert (
        isinstance(plain, Notice) and "/msg NAME TEXT" in plain.text and "/kick" not in plain.text
    )
    assert isinstance(op, Notice) and "/kick NAME [REASON]" in op.text


async def test_flood_control_counts_every_new_request(autojump_clock: object) -> None:
    limits = RELAXED.replace(flood_burst=2, flood_per_second=1.0)
    async with start_room(limits) as room:
        alice = await room.join("alice")
        start = trio.current_time()
        for _ in range(2):
            await alice.send(Away("x"))
            await alice.send(Back())
        for _ in range(2):
            await alice.expect(WentAway)
            await alice.expect(CameBack)
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)


async def test_plain_text_members_use_the_commands(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        bob = await room.join("bob")
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        await stream.send_all(f"{PASSWORD}\nnc-user\n".encode())
        buffer = bytearray()
        await read_until(stream, b"tata to leave.\n", buffer)
        await bob.expect(Join)
        await stream.send_all(b"/msg bob hi from nc\n/me waves\n/nick nc-person\n/frobnicate\n")
        private = await bob.expect(Message)
        action = await bob.expect(Message)
        renamed = await bob.expect(Renamed)
        seen = await read_until(stream, b"/help lists them\n", buffer)
    assert isinstance(private, Message) and private.to == "bob" and private.text == "hi from nc"
    assert isinstance(action, Message) and action.action
    assert isinstance(renamed, Renamed) and renamed.new == "nc-person"
    assert b"nc-user -> bob: hi from nc" in seen
    assert b"* nc-user waves" in seen and b"is now known as nc-person" in seen
    assert b"! unknown command /frobnicate; /help lists them" in seen


async def test_a_member_back_from_a_tunnel_resumes_with_nothing_missing_or_twice(
    room: RoomFixture,
) -> None:
    """`hello {since}`: every message after it, in order, each once, then live traffic."""
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await bob.say("before", "b0")
        seen = await alice.expect(Message)
        assert isinstance(seen, Message)
        await alice.aclose()  # the train enters the tunnel
        for i in range(5):
            await bob.say(f"while away {i}", f"b{i + 1}")
        await bob.expect(Leave)
        back = await Peer.open(room.port)
        await back.send(Hello("alice", PASSWORD, since=seen.seq))
        welcome = await back.next_event()
        await bob.say("after", "b9")
        texts = []
        while len(texts) < 6:
            event = await back.next_event()
            if isinstance(event, Message):
                texts.append(event.text)
    assert isinstance(welcome, Welcome) and welcome.seq == seen.seq + 5
    assert texts == [f"while away {i}" for i in range(5)] + ["after"]


async def test_resume_past_the_limit_says_how_many_were_left_out() -> None:
    async with start_room(RELAXED.replace(resume_max=3)) as room:
        with trio.fail_after(STEP):
            bob = await room.join("bob")
            for i in range(10):
                await bob.say(f"m{i}", str(i))
            for _ in range(10):
                await bob.expect(Message)
            back = await Peer.open(room.port)
            await back.send(Hello("alice", PASSWORD, since=2))
            assert isinstance(await back.next_event(), Welcome)
            gap = await back.next_event()
            replayed = [await back.expect(Message) for _ in range(3)]
    assert gap == Gap(5)
    assert [m.text for m in replayed if isinstance(m, Message)] == ["m7", "m8", "m9"]


@pytest.mark.parametrize("since", [10_000, 0])
async def test_a_since_beyond_the_room_or_from_the_start_never_crashes(since: int) -> None:
    async with start_room(RELAXED) as room:
        with trio.fail_after(STEP):
            bob = await room.join("bob")
            await bob.say("only", "1")
            await bob.expect(Message)
            back = await Peer.open(room.port)
            await back.send(Hello("alice", PASSWORD, since=since))
            assert isinstance(await back.next_event(), Welcome)
            await bob.say("live", "2")
            first = await back.expect(Message)
    assert isinstance(first, Message)
    assert first.text == ("live" if since else "only")


async def test_a_negative_or_non_integer_since_is_a_bad_frame(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        for raw in (b'"since":-1', b'"since":"5"', b'"since":1.5'):
            peer = await Peer.open(room.port)
            await peer.stream.send_all(
                b'{"type":"hello","version":1,"name":"x","password":"p",' + raw + b"}\n"
            )
            error = await peer.next_event()
            assert isinstance(error, Error) and error.code == "bad_frame", raw


async def test_a_private_message_alone_is_delivered_at_once(room: RoomFixture) -> None:
    """Its log entry has no bytes for the others; the fan-out must still flush it."""
    with trio.fail_after(STEP):
        alice = await room.join("alice")
        bob = await room.join("bob")
        await alice.send(Say("just this", "p", to="bob"))
        got = await bob.expect(Message)
        echo = await alice.expect(Message)
    assert isinstance(got, Message) and got.text == "just this"
    assert isinstance(echo, Message) and echo.id == "p"
