"""Two servers, one room: the backplane against a real redis-server (the `redis_server`
fixture), each test in a namespace of its own. One order and no gaps on every server, every
entry once, names unique across servers, history from Redis."""

from __future__ import annotations

import secrets
from collections import Counter

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backplanenode import Node, running
from multichat.protocol.names import name_key
from multichat.server.backplane import (
    Backplane,
    BackplaneEntry,
    NameTaken,
    NotJoined,
    parse_address,
)
from multichat.server.backplane_codec import Keys, parse_id
from multichat.server.history_entries import (
    AWAY,
    BACK,
    JOIN,
    LEAVE,
    MESSAGE,
    NICK,
    NOTICE,
    TOPIC,
    StoredEntry,
)
from redisserver import RedisServer

ROOM = "den"


@pytest.fixture
def namespace() -> str:
    return f"test-{secrets.token_hex(4)}"


def message(sender: str, text: str) -> StoredEntry:
    return StoredEntry(0, 1700000000.5, MESSAGE, sender, text)


async def wait_messages(node: Node, count: int, room: str = ROOM) -> list[BackplaneEntry]:
    with trio.fail_after(10):
        await node.recorder.wait_for(room, lambda es: sum(e.is_message for e in es) >= count)
    return node.recorder.entries[room]


def assert_one_order(entries: list[BackplaneEntry]) -> None:
    """IDs only grow; messages are numbered 1, 2, 3... with no gap; anything else carries the
    newest message's seq."""
    ids = [parse_id(e.id) for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    newest = 0
    for e in entries:
        if e.is_message:
            assert e.entry.seq == newest + 1, f"gap before {e.id}"
            newest = e.entry.seq
        else:
            assert e.entry.seq == newest


async def test_two_servers_see_one_order_with_no_gaps(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace) as a, running(redis_server.url, namespace) as b:
        await a.backplane.open_room(ROOM, history=0)
        await b.backplane.open_room(ROOM, history=0)
        alice = await a.backplane.seats.join(ROOM, "alice")
        bob = await b.backplane.seats.join(ROOM, "bob")
        given: dict[str, int] = {}
        for i in range(10):
            given[f"a{i}"] = await a.backplane.seats.publish(
                ROOM, message("alice", f"a{i}"), seat=alice
            )
            given[f"b{i}"] = await b.backplane.seats.publish(
                ROOM, message("bob", f"b{i}"), seat=bob
            )
            if i == 4:
                await a.backplane.seats.publish(
                    ROOM, StoredEntry(0, 1.0, NOTICE, "", "host muted x")
                )
                await b.backplane.seats.publish(ROOM, StoredEntry(0, 1.0, TOPIC, "bob", "plans"))
        seen_a = await wait_messages(a, 20)
        seen_b = await wait_messages(b, 20)
        assert seen_a == seen_b
        assert_one_order(seen_a)
        assert [e.entry.type for e in seen_a[:2]] == [JOIN, JOIN]
        # seq was given once, in Redis, and is what every server reads
        assert {e.entry.text: e.entry.seq for e in seen_a if e.is_message} == given
        assert [e.entry.text for e in seen_a if e.entry.type == NOTICE] == ["host muted x"]


async def test_concurrent_publishers_on_both_servers_each_entry_once_in_one_order(
    redis_server: RedisServer, namespace: str
) -> None:
    per_member = 25
    async with running(redis_server.url, namespace) as a, running(redis_server.url, namespace) as b:
        for node in (a, b):
            await node.backplane.open_room(ROOM, history=0)
        seats = []
        for node, prefix in ((a, "a"), (b, "b")):
            for n in range(3):
                seats.append((node, await node.backplane.seats.join(ROOM, f"{prefix}{n}")))

        async def chat(node: Node, seat_index: int) -> None:
            seat = seats[seat_index][1]
            for i in range(per_member):
                entry = message(seat.name, f"{seat.name}:{i}")
                await node.backplane.seats.publish(ROOM, entry, seat=seat, id=i)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for index, (node, _) in enumerate(seats):
                    nursery.start_soon(chat, node, index)
        total = per_member * len(seats)
        seen_a = await wait_messages(a, total)
        seen_b = await wait_messages(b, total)
        assert seen_a == seen_b
        assert_one_order(seen_a)
        messages = [e for e in seen_a if e.is_message]
        assert len(messages) == total
        counted = Counter((e.origin.node, e.origin.member, e.origin.id) for e in messages)
        assert set(counted.values()) == {1}
        for _, seat in seats:
            mine = [e.origin.id for e in messages if e.origin.member == seat.token]
            assert mine == list(range(per_member))  # each member's posts in the order it sent


async def test_the_echo_names_its_server_its_member_and_the_clients_id(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace) as a, running(redis_server.url, namespace) as b:
        for node in (a, b):
            await node.backplane.open_room(ROOM, history=0)
        alice = await a.backplane.seats.join(ROOM, "alice")
        await a.backplane.seats.publish(ROOM, message("alice", "one"), seat=alice, id=42)
        await a.backplane.seats.publish(ROOM, message("alice", "two"), seat=alice, id="42")
        await a.backplane.seats.publish(ROOM, message("alice", "three"), seat=alice)
        for node in (a, b):
            one, two, three = [e for e in await wait_messages(node, 3) if e.is_message]
            assert one.origin.node == a.backplane.node_id and one.origin.member == alice.token
            assert (one.origin.id, two.origin.id, three.origin.id) == (42, "42", None)
            assert 0 < one.origin.ref < two.origin.ref < three.origin.ref


async def test_a_name_is_held_on_every_server_until_its_member_leaves(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace) as a, running(redis_server.url, namespace) as b:
        outcomes: list[object] = []

        async def claim(node: Node, name: str) -> None:
            try:
                outcomes.append(await node.backplane.seats.join(ROOM, name))
            except NameTaken as exc:
                outcomes.append(exc)

        # "alice", "ALICE" and "Аlice" (a Cyrillic A) are one name, from either server
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for node, name in ((a, "alice"), (b, "ALICE"), (a, "\u0410lice"), (b, "alice")):
                    nursery.start_soon(claim, node, name)
        (seat,) = [o for o in outcomes if not isinstance(o, NameTaken)]
        assert sum(isinstance(o, NameTaken) for o in outcomes) == 3
        bob = await b.backplane.seats.join(ROOM, "bob")
        assert [m.name for m in await a.backplane.members(ROOM)] == [seat.name, "bob"]
        holder = a if seat in a.backplane.seats.held() else b
        other = b if holder is a else a
        holder.backplane.seats.leave_nowait(seat, "quit")
        with trio.fail_after(10):
            while True:
                try:
                    again = await other.backplane.seats.join(ROOM, "Alice")
                    break
                except NameTaken:
                    await trio.sleep(0.01)  # the leave is on its way to Redis
        members = await b.backplane.members(ROOM)
        assert [(m.name, m.node) for m in members] == [
            ("bob", b.backplane.node_id),
            ("Alice", other.backplane.node_id),
        ]
        assert members[1].token == again.token and bob.token != again.token


async def test_a_rename_moves_the_name_on_every_server(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace) as a, running(redis_server.url, namespace) as b:
        await b.backplane.open_room(ROOM, history=0)
        alice = await a.backplane.seats.join(ROOM, "alice")
        await b.backplane.seats.join(ROOM, "bob")
        with pytest.raises(NameTaken):
            await a.backplane.seats.rename(alice, "BOB")
        al = await a.backplane.seats.rename(alice, "al")
        assert (al.name, al.key, al.token) == ("al", name_key("al"), alice.token)
        with pytest.raises(NameTaken):
            await b.backplane.seats.join(ROOM, "AL")
        await b.backplane.seats.join(ROOM, "alice")  # free again
        # the old seat still works: the backplane follows the member by its token
        await a.backplane.seats.publish(ROOM, message("al", "hi"), seat=alice)
        names = [(m.name, m.key) for m in await a.backplane.members(ROOM)]
        assert sorted(names) == sorted((n, name_key(n)) for n in ("al", "alice", "bob"))
        with trio.fail_after(10):
            await b.recorder.wait_for(ROOM, lambda es: any(e.entry.type == NICK for e in es))
        (nick,) = [e.entry for e in b.recorder.entries[ROOM] if e.entry.type == NICK]
        assert (nick.sender, nick.text) == ("alice", "al")


async def test_a_member_that_left_cannot_post(redis_server: RedisServer, namespace: str) -> None:
    async with running(redis_server.url, namespace) as a:
        alice = await a.backplane.seats.join(ROOM, "alice")
        a.backplane.seats.leave_nowait(alice, "quit")
        a.backplane.seats.leave_nowait(alice, "quit")  # harmless
        with pytest.raises(NotJoined):
            await a.backplane.seats.publish(ROOM, message("alice", "hi"), seat=alice)
        with pytest.raises(NotJoined):
            await a.backplane.seats.rename(alice, "al")
        with pytest.raises(ValueError, match="join, leave and rename"):
            await a.backplane.seats.publish(ROOM, StoredEntry(0, 1.0, LEAVE, "x", "quit"))


async def test_a_post_repeated_with_its_client_id_is_appended_once(
    redis_server: RedisServer, namespace: str
) -> None:
    """A line resent after "it may have gone through" (same seat, same client id) is not
    appended again: its first copy's echo is the echo of both."""
    async with running(redis_server.url, namespace) as a:
        alice = await a.backplane.seats.join(ROOM, "alice")
        first = await a.backplane.seats.publish(ROOM, message("alice", "hi"), seat=alice, id=7)
        again = await a.backplane.seats.publish(ROOM, message("alice", "hi"), seat=alice, id=7)
        as_text = await a.backplane.seats.publish(ROOM, message("alice", "hi"), seat=alice, id="7")
        no_id = [
            await a.backplane.seats.publish(ROOM, message("alice", "hi"), seat=alice)
            for _ in range(2)
        ]
        bob = await a.backplane.seats.join(ROOM, "bob")
        bobs = await a.backplane.seats.publish(ROOM, message("bob", "hi"), seat=bob, id=7)
        everything = await a.backplane.recent(ROOM, 100)
    assert again == first  # the seq of the post it repeats
    assert as_text == first + 1  # "7" is not 7
    assert no_id == [first + 2, first + 3]  # without an id, nothing to tell them apart
    assert bobs == first + 4  # ids are each seat's own
    messages = [e for e in everything if e.is_message]
    assert [(e.entry.sender, e.origin.id) for e in messages] == [
        ("alice", 7),
        ("alice", "7"),
        ("alice", None),
        ("alice", None),
        ("bob", 7),
    ]


async def test_opening_a_room_forgets_the_bans_and_mutes_that_have_run_out(
    redis_server: RedisServer, namespace: str
) -> None:
    """Every server skips them, so they are deleted, or the meta hash would grow for ever."""
    meta = Keys(namespace).meta(ROOM)
    gone = {
        "ban:192.0.2.1": '{"until": 1.0, "reason": "", "by": "host"}',
        "mute:bob": '{"until": 1.0}',
    }
    kept = {
        "ban:192.0.2.2": '{"until": null, "reason": "spam", "by": "host"}',
        "mute:cat": '{"until": 4000000000.0}',
    }
    for field, value in {**gone, **kept}.items():
        redis_server.command("HSET", meta, field, value)
    async with running(redis_server.url, namespace) as a:
        snapshot = await a.backplane.open_room(ROOM, history=0)
    assert sorted(ban.address for ban in snapshot.bans) == ["192.0.2.1", "192.0.2.2"]
    assert snapshot.mutes == {"bob": 1.0, "cat": 4000000000.0}
    for field in gone:
        assert redis_server.command("HEXISTS", meta, field) == b":0", field
    for field, value in kept.items():
        assert redis_server.command("HGET", meta, field) == value.encode(), field


async def test_a_room_opened_late_gets_a_snapshot_then_everything_after_it(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace) as a, running(redis_server.url, namespace) as b:
        alice = await a.backplane.seats.join(ROOM, "alice")
        await a.backplane.seats.publish(ROOM, StoredEntry(0, 1.0, TOPIC, "alice", "plans"))
        for i in range(30):
            await a.backplane.seats.publish(ROOM, message("alice", f"m{i}"), seat=alice)
        snapshot = await b.backplane.open_room(ROOM, history=10)
        assert [e.entry.text for e in snapshot.entries] == [f"m{i}" for i in range(20, 30)]
        assert (snapshot.seq, snapshot.position) == (30, "30-0")
        assert (snapshot.topic, snapshot.topic_by) == ("plans", "alice")
        assert [(m.name, m.token) for m in snapshot.members] == [("alice", alice.token)]
        for i in range(30, 35):
            await a.backplane.seats.publish(ROOM, message("alice", f"m{i}"), seat=alice)
        later = await wait_messages(b, 5)
        assert [e.entry.text for e in later] == [f"m{i}" for i in range(30, 35)]
        everything = await b.backplane.recent(ROOM, 1000)
        assert everything[-15:] == snapshot.entries + later
        assert_one_order(everything)
        empty = await b.backplane.open_room("nobody-here", history=5)
        assert (empty.entries, empty.members, empty.seq, empty.position) == ([], [], 0, "0-0")


async def test_since_replays_the_newest_messages_and_counts_the_rest(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace) as a:
        alice = await a.backplane.seats.join(ROOM, "alice")
        for i in range(1, 21):
            await a.backplane.seats.publish(ROOM, message("alice", f"m{i}"), seat=alice)
            if i == 12:
                await a.backplane.seats.join(ROOM, "bob")
        replay = await a.backplane.since(ROOM, 5, 10)
        assert [e.entry.text for e in replay.entries][:3] == ["m11", "m12", ""]
        assert [e.entry.seq for e in replay.entries if e.is_message] == list(range(11, 21))
        assert replay.entries[2].entry.type == JOIN and replay.missed == 5
        assert (await a.backplane.since(ROOM, 18, 10)).missed == 0
        assert [e.entry.text for e in (await a.backplane.since(ROOM, 18, 10)).entries] == [
            "m19",
            "m20",
        ]
        assert (await a.backplane.since(ROOM, 20, 10)).entries == []
        assert (await a.backplane.since(ROOM, 99, 10)).entries == []
        # stitched onto a log that holds message 15 onwards: 14 and before from Redis
        stitched = await a.backplane.since(ROOM, 5, 4, before="15-0")
        assert [e.entry.seq for e in stitched.entries] == [11, 12, 12, 13, 14]
        assert stitched.missed == 5


async def test_the_stream_is_capped_at_the_retention(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace, retention=100) as a:
        await a.backplane.open_room(ROOM, history=0)
        alice = await a.backplane.seats.join(ROOM, "alice")
        for i in range(600):
            await a.backplane.seats.publish(ROOM, message("alice", f"m{i}"), seat=alice)
        length = int(redis_server.command("XLEN", Keys(namespace).log(ROOM))[1:])
        assert 100 <= length <= 300  # MAXLEN ~ trims whole nodes of 100 entries
        assert len(await wait_messages(a, 600)) == 601  # readers keeping up lose nothing


async def test_a_server_that_stops_makes_its_members_leave(
    redis_server: RedisServer, namespace: str
) -> None:
    async with running(redis_server.url, namespace) as a:
        await a.backplane.open_room(ROOM, history=0)
        async with running(redis_server.url, namespace) as b:
            await b.backplane.seats.join(ROOM, "bob")
            await b.backplane.seats.join("other", "carol")
        with trio.fail_after(10):
            await a.recorder.wait_for(ROOM, lambda es: any(e.entry.type == LEAVE for e in es))
        leave = a.recorder.entries[ROOM][-1].entry
        assert (leave.type, leave.sender, leave.text) == (LEAVE, "bob", "server closed")
        assert await a.backplane.members("other") == []
        await a.backplane.seats.join("other", "carol")
        await a.backplane.seats.join(ROOM, "bob")


kinds = st.sampled_from([MESSAGE, NOTICE, TOPIC, AWAY, BACK])
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
entries = st.builds(
    StoredEntry,
    seq=st.just(0),
    ts=st.floats(allow_nan=False, allow_infinity=False),
    type=kinds,
    sender=texts,
    text=texts,
    recipient=st.none() | texts,
    extra=st.none() | st.dictionaries(texts, st.integers() | texts | st.booleans(), min_size=1),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(
    [
        (StoredEntry(0, -0.0, MESSAGE, "a\x00b", '\x00\x01\n\u2028"\\{}[]', "\U0001f389"), "\x00"),
        (StoredEntry(0, 1e300, NOTICE, "", "x", None, {"k": "\x00", "n": [1, None]}), 2**53),
        # Integers past 64 bits: orjson reads them as floats.
        (StoredEntry(0, 1.5, MESSAGE, "a", "b", None, {"": -(2**63) - 1, "n": 2**64}), None),
    ]
)
@given(st.lists(st.tuples(entries, st.none() | texts | st.integers(-(2**53), 2**53)), max_size=8))
def test_entries_come_back_from_redis_exactly_as_published(
    redis_server: RedisServer, published: list[tuple[StoredEntry, str | int | None]]
) -> None:
    async def main() -> list[BackplaneEntry]:
        async with running(redis_server.url, f"test-{secrets.token_hex(4)}") as node:
            await node.backplane.open_room(ROOM, history=0)
            for entry, id in published:
                await node.backplane.seats.publish(ROOM, entry, id=id)
            with trio.fail_after(10):
                await node.recorder.wait_for(ROOM, lambda es: len(es) == len(published))
            return node.recorder.entries[ROOM]

    back = trio.run(main)
    for (entry, id), got in zip(published, back, strict=True):
        assert got.entry.type == entry.type and got.entry.ts == entry.ts
        assert (got.entry.sender, got.entry.text) == (entry.sender, entry.text)
        assert (got.entry.recipient, got.entry.extra) == (entry.recipient, entry.extra)
        assert got.origin.id == id and type(got.origin.id) is type(id)


async def test_a_backplane_not_running_says_so(redis_server: RedisServer) -> None:
    backplane = Backplane(parse_address(redis_server.url), on_entries=lambda room, es: None)
    with pytest.raises(RuntimeError, match="not running"):
        await backplane.members(ROOM)
