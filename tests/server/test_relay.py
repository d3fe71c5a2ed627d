"""Two servers, one room, in this process: `ChatServer(backplane=...)` on a real redis-server
(the `redis_server` fixture, a database of its own per test). One order on both, names unique
across servers, `who` and the welcome list everyone, joins and leaves cross, resume from Redis,
private messages across servers, and moderation across servers."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from chatpeer import PASSWORD, RELAXED, Peer, host_command
from multichat.protocol.events import (
    Away,
    BanList,
    ConnectionClosed,
    Error,
    Hello,
    Join,
    JoinRoom,
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
from multichat.server.backplane import parse_address
from multichat.server.history_settings import HistorySettings
from multichat.server.listeners import ChatServer
from multichat.server.relay import PUBLISH_WINDOW
from redisserver import RedisServer

STEP = 10
TOKEN = "host-token"
# Databases 1 to 15 of the shared Redis (Redis has 16), one per test; 0 is test_backplane's.
_DATABASES = itertools.count(1)


@pytest.fixture
def backplane_url(redis_server: RedisServer) -> str:
    database = next(_DATABASES)
    assert database < 16, "test_relay.py has more tests than databases: add a namespace"
    return redis_server.url.rsplit("/", 1)[0] + f"/{database}"


@asynccontextmanager
async def servers(
    url: str, count: int = 2, rooms: tuple[str, ...] = ()
) -> AsyncIterator[list[int]]:
    """`count` servers of one backplane (host token TOKEN, more `rooms`); their ports."""
    async with trio.open_nursery() as nursery:
        started = [
            ChatServer(
                PASSWORD,
                limits=RELAXED,
                backplane=parse_address(url),
                control_token=TOKEN,
                rooms=rooms,
            )
            for _ in range(count)
        ]
        ports = [await nursery.start(server.serve, 0, "127.0.0.1") for server in started]
        yield ports
        for server in started:
            server.shutdown_nowait("test over")


async def test_members_of_two_servers_chat_in_one_order(backplane_url: str) -> None:
    async with servers(backplane_url) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            bob = await Peer.join(b, "bob")
            assert bob.welcome is not None and bob.welcome.members == ("bob", "ann")
            joined = await ann.expect(Join)
            assert isinstance(joined, Join) and joined.name == "bob"
            await ann.say("hello from a", "a1")
            mine = await ann.heard("hello from a")
            theirs = await bob.heard("hello from a")
            await bob.say("hello from b", "b1")
            reply_b = await bob.heard("hello from b")
            reply_a = await ann.heard("hello from b")
            await ann.send(Who())
            who = await ann.expect(Members)
    assert mine.id == "a1" and theirs.id is None and mine.seq == theirs.seq
    assert reply_b.id == "b1" and reply_b.seq == reply_a.seq == mine.seq + 1
    assert isinstance(who, Members) and set(who.names) == {"ann", "bob"}


async def test_names_are_unique_across_servers(backplane_url: str) -> None:
    async with servers(backplane_url) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            other = await Peer.open(b)
            await other.send(Hello("ANN", PASSWORD))
            taken = await other.expect(Error)
            await ann.aclose()
    assert isinstance(taken, Error) and taken.code == "name_taken"


async def test_a_leave_and_a_join_on_one_server_are_seen_on_the_other(backplane_url: str) -> None:
    async with servers(backplane_url) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            bob = await Peer.join(b, "bob")
            joined = await ann.expect(Join)
            await bob.aclose()
            left = await ann.expect(Leave)
            await ann.send(Who())
            who = await ann.expect(Members)
    assert isinstance(joined, Join) and joined.name == "bob"
    assert isinstance(left, Leave) and left.name == "bob"
    assert isinstance(who, Members) and who.names == ("ann",)


async def test_a_member_resumes_on_another_server_from_redis(backplane_url: str) -> None:
    async with servers(backplane_url) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            for i in range(3):
                await ann.say(f"line {i}", f"a{i}")
                await ann.heard(f"line {i}")
            back = await Peer.open(b)
            await back.send(Hello("bob", PASSWORD, since=1))
            welcome = await back.next_event()
            replayed = [await back.expect(Message) for _ in range(2)]
            await ann.say("after", "a3")
            after = await back.heard("after")
    assert isinstance(welcome, Welcome) and welcome.seq == 3
    assert [m.text for m in replayed if isinstance(m, Message)] == ["line 1", "line 2"]
    assert isinstance(after, Message) and after.seq == 4


async def test_private_messages_cross_servers(backplane_url: str) -> None:
    async with servers(backplane_url, 3) as (a, b, c):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            bob = await Peer.join(b, "bob")
            cat = await Peer.join(c, "cat")
            await ann.expect(Join)
            await ann.send(Say("psst", "p1", to="bob"))
            echo = await ann.heard("psst")
            got = await bob.heard("psst")
            await ann.say("public", "a2")
            public = await cat.heard("public")
            await ann.send(Say("nobody", "p2", to="dan"))
            unknown = await ann.expect(Error)
    assert echo.id == "p1" and echo.to == got.to == "bob" and got.seq == echo.seq
    assert public.seq == echo.seq + 1  # cat never saw the private one, and no Gap for it
    assert isinstance(unknown, Error) and unknown.code == "no_such_member"


async def test_renames_topics_and_kicks_cross_servers(backplane_url: str) -> None:
    async with servers(backplane_url) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            bob = await Peer.join(b, "bob")
            await ann.expect(Join)
            await bob.send(Nick("ann"))
            taken = await bob.expect(Error)
            await bob.send(Nick("rob"))
            renamed = await ann.expect(Renamed)
            await host_command(a, TOKEN, "op", "ann")
            await ann.send(SetTopic("board games"))
            topic = await bob.expect(Topic)
            await bob.send(Away("lunch"))
            away = await ann.expect(WentAway)
            # Kicked from server a: server b, where rob is, carries it out.
            kicked = await host_command(a, TOKEN, "kick", "rob", "spam")
            told = await bob.expect(Error)
            left = await ann.expect(Leave)
            await ann.send(Who())
            who = await ann.expect(Members)
    assert isinstance(taken, Error) and taken.code == "name_taken"
    assert isinstance(renamed, Renamed) and (renamed.old, renamed.new) == ("bob", "rob")
    assert isinstance(topic, Topic) and (topic.text, topic.by) == ("board games", "ann")
    assert isinstance(away, WentAway) and (away.name, away.text) == ("rob", "lunch")
    assert isinstance(kicked, Notice) and kicked.text == "host kicked rob (spam)"
    assert isinstance(told, Error) and told.code == "kicked"
    assert isinstance(left, Leave) and (left.name, left.reason) == ("rob", "kicked: spam")
    assert isinstance(who, Members) and who.names == ("ann",)


async def test_members_the_backplane_lost_are_told_and_closed(backplane_url: str) -> None:
    """`on_seats_lost` (this server was taken for dead, or Redis lost its data): the others
    saw them leave, so their connections close with a clear error; they join again."""
    async with trio.open_nursery() as nursery:
        server = ChatServer(PASSWORD, limits=RELAXED, backplane=parse_address(backplane_url))
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        with trio.fail_after(STEP):
            ann = await Peer.join(port, "ann")
            assert server.backplane is not None
            server.rooms.seats_lost(server.backplane.seats.held())
            error = await ann.expect(Error)
            closed = await ann.next_event()
            again = await Peer.join(port, "dan")
        server.shutdown_nowait("test over")
    assert isinstance(error, Error) and error.code == "seat_lost"
    assert isinstance(closed, ConnectionClosed)
    assert again.welcome is not None and again.welcome.members == ("dan",)


async def test_a_member_moves_rooms_on_the_backplane(backplane_url: str) -> None:
    async with servers(backplane_url, rooms=("games",)) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            bob = await Peer.join(b, "bob")
            cat = await Peer.join(b, "cat", room="games")
            await ann.expect(Join)
            await ann.send(JoinRoom("games"))
            welcome = await ann.expect(Welcome)
            left = await bob.expect(Leave)
            joined = await cat.expect(Join)
            await ann.say("in games", "g1")
            echo = await ann.heard("in games")
            heard = await cat.heard("in games")
    assert isinstance(welcome, Welcome) and welcome.room == "games"
    assert set(welcome.members) == {"ann", "cat"}
    assert isinstance(left, Leave) and (left.name, left.reason) == ("ann", "went to games")
    assert isinstance(joined, Join) and joined.name == "ann"
    assert echo.id == "g1" and heard.seq == echo.seq == 1


async def test_a_fast_senders_lines_are_pipelined_up_to_the_window(own_redis: RedisServer) -> None:
    """A sender does not wait a round trip per line: up to PUBLISH_WINDOW of its lines are on
    their way to Redis at once, its session waits past that, and every line comes back once,
    in order, with its id."""
    server = ChatServer(PASSWORD, limits=RELAXED, backplane=parse_address(own_redis.url))
    count = PUBLISH_WINDOW + 8
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        with trio.fail_after(STEP):
            ann = await Peer.join(port, "ann")
            hosted = server.rooms.get(None)
            assert hosted is not None and hosted.relay is not None
            relay = hosted.relay
            assert own_redis.process is not None
            pid = own_redis.process.pid
            os.kill(pid, signal.SIGSTOP)  # well under COMMAND_SECONDS: nothing times out
            try:
                for i in range(count):
                    await ann.say(f"line {i}", f"id{i}")
                for _ in range(200):
                    if relay.in_flight() >= PUBLISH_WINDOW:
                        break
                    await trio.sleep(0.005)
                await trio.sleep(0.1)
                held = relay.in_flight()
            finally:
                os.kill(pid, signal.SIGCONT)
            echoes = [await ann.heard(f"line {i}") for i in range(count)]
            for _ in range(200):
                if relay.in_flight() == 0:
                    break
                await trio.sleep(0.005)
            drained = relay.in_flight()
        server.shutdown_nowait("test over")
    assert held == PUBLISH_WINDOW
    assert drained == 0
    assert [echo.id for echo in echoes] == [f"id{i}" for i in range(count)]
    assert [echo.seq for echo in echoes] == list(range(echoes[0].seq, echoes[0].seq + count))


async def test_moderation_holds_across_servers(backplane_url: str) -> None:
    """Mutes, operators, kicks, bans and the lock reach the server of the member they name,
    or every server: the room is one room, whichever server its members use."""
    async with servers(backplane_url) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            bob = await Peer.join(b, "bob")
            cat = await Peer.join(b, "cat")
            muted = await host_command(a, TOKEN, "mute", "bob", "--for", "1m")
            heard_mute = await ann.expect(Notice)  # b's notice, through Redis
            await bob.say("can I talk?", "b1")
            refused = await bob.expect(Error)
            await host_command(a, TOKEN, "op", "cat")
            await ann.expect(Notice)
            made_op = [await cat.expect(Notice) for _ in range(2)][1]  # the mute's, then its own
            await bob.send(Away("lunch"))
            await ann.expect(WentAway)
            await ann.send(Who())
            who = await ann.expect(Members)  # marks for members of b, asked on a
            # cat, an operator made from server a, kicks ann (on a) from server b.
            await cat.send(Moderate("kick", "ann", "bye"))
            kick_answer = await cat.expect(Notice)
            kicked = await ann.expect(Error)
            # The lock, from b, holds on a too.
            await host_command(b, TOKEN, "lock")
            locked_notice = await cat.expect(Notice)
            turned_away = await Peer.open(a)
            await turned_away.send(Hello("dan", PASSWORD))
            locked = await turned_away.expect(Error)
            await host_command(b, TOKEN, "unlock")
            await cat.expect(Notice)
            # A ban by name, from a, of a member of b: b bans the address bob came from, and
            # hands that on: a turns it away too.
            await host_command(a, TOKEN, "ban", "bob", "--for", "1m", "spam")
            banned = await bob.expect(Error)
            for _ in range(100):  # the ban reaches a through Redis: a moment, not a round trip
                probe = await Peer.open(a)
                await probe.send(Hello("eve", PASSWORD))
                answer = await probe.next_event()
                await probe.aclose()
                if isinstance(answer, Error) and answer.code == "banned":
                    break
                await trio.sleep(0.02)
            # a knows the ban by bob's name too, which only b could tell it.
            bans_on_a = await host_command(a, TOKEN, "bans")
            unbanned = await host_command(a, TOKEN, "unban", "bob")
    assert isinstance(bans_on_a, BanList) and [b.name for b in bans_on_a.bans] == ["bob"]
    assert isinstance(unbanned, Notice) and unbanned.text == "host lifted the ban on bob"
    assert isinstance(muted, Notice) and muted.text == "host muted bob for 1m"
    assert isinstance(heard_mute, Notice) and heard_mute.text == "host muted bob for 1m"
    assert isinstance(refused, Error) and refused.code == "muted" and refused.id == "b1"
    assert isinstance(made_op, Notice) and made_op.text == "host made cat an operator"
    assert isinstance(who, Members) and who.away == (("bob", "lunch"),) and who.ops == ("cat",)
    assert isinstance(kick_answer, Notice) and kick_answer.text == "cat kicked ann (bye)"
    assert isinstance(kicked, Error) and kicked.code == "kicked" and "cat" in kicked.message
    assert isinstance(locked_notice, Notice) and "locked" in locked_notice.text
    assert isinstance(locked, Error) and locked.code == "locked"
    assert isinstance(banned, Error) and banned.code == "banned" and "spam" in banned.message
    assert isinstance(answer, Error) and answer.code == "banned"


async def test_a_mute_holds_on_every_server_under_any_name_and_on_servers_started_later(
    backplane_url: str,
) -> None:
    """A muted member cannot shed the mute by coming back on another server, by renaming, or
    on a server started since: a mute is kept by name on every server, and in Redis."""
    async with servers(backplane_url) as (a, b):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            bob = await Peer.join(b, "bob")
            await host_command(a, TOKEN, "mute", "bob", "--for", "1h")
            await ann.expect(Notice)
            await bob.aclose()
            await ann.expect(Leave)  # gone from b, and the name free again...
            bob = await Peer.join(a, "bob")  # ...for bob to come back on a
            await bob.say("muted on a too?", "m1")
            on_a = await bob.expect(Error)
            await bob.send(Nick("robert"))
            await ann.expect(Renamed)
            await bob.say("and as robert?", "m2")
            renamed = await bob.expect(Error)
            await bob.aclose()
            await ann.expect(Leave)
            robert = await Peer.join(b, "robert")  # b moved the mute along with the name
            await robert.say("on b as robert?", "m3")
            on_b = await robert.expect(Error)
            await robert.aclose()
            await ann.expect(Leave)
    async with servers(backplane_url, count=1) as (c,):
        with trio.fail_after(STEP):
            robert = await Peer.join(c, "robert")
            await robert.say("on a server started since?", "m4")
            on_c = await robert.expect(Error)
            await host_command(c, TOKEN, "unmute", "robert")
            await robert.say("free now", "m5")
            echo = await robert.heard("free now")
    for refused, id in ((on_a, "m1"), (renamed, "m2"), (on_b, "m3"), (on_c, "m4")):
        assert isinstance(refused, Error) and refused.code == "muted" and refused.id == id
        assert "more" in refused.message  # "muted for 59m more": the time carried over too
    assert echo.id == "m5"


async def test_bans_and_the_lock_are_kept_in_redis_for_servers_that_start_later(
    backplane_url: str,
) -> None:
    """A server that opens the room later (or restarts) takes its bans and lock from Redis,
    however long ago they were set."""
    async with servers(backplane_url, count=1) as (a,):
        with trio.fail_after(STEP):
            ann = await Peer.join(a, "ann")
            await host_command(a, TOKEN, "ban", "192.0.2.7", "--for", "1h", "spammer")
            await host_command(a, TOKEN, "ban", "192.0.2.8", "gone too")
            await host_command(a, TOKEN, "unban", "192.0.2.8")
            await host_command(a, TOKEN, "lock")
            await ann.expect(Notice)  # the lock's: published after the bans, in one queue
    async with servers(backplane_url, count=1) as (c,):
        with trio.fail_after(STEP):
            turned_away = await Peer.open(c)
            await turned_away.send(Hello("dan", PASSWORD))
            locked = await turned_away.expect(Error)
            bans = await host_command(c, TOKEN, "bans")
    assert isinstance(locked, Error) and locked.code == "locked"
    assert isinstance(bans, BanList) and [b.address for b in bans.bans] == ["192.0.2.7"]
    (ban,) = bans.bans
    assert ban.reason == "spammer" and ban.by == "host" and ban.until is not None


async def test_the_history_tables_keep_entries_caps_each_rooms_stream(backplane_url: str) -> None:
    server = ChatServer(
        PASSWORD,
        limits=RELAXED,
        backplane=parse_address(backplane_url),
        history_settings=HistorySettings(keep_entries=100),
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, 0, "127.0.0.1")
            ann = await Peer.join(port, "ann")
            for i in range(600):
                await ann.say(f"m{i}")
            await ann.heard("m599")
            assert server.backplane is not None
            kept = await server.backplane.recent(server.rooms.default.key, 1_000)
            assert 100 <= len(kept) <= 300  # MAXLEN ~ trims whole nodes of 100 entries
            assert kept[-1].entry.text == "m599"
            server.shutdown_nowait("test over")
