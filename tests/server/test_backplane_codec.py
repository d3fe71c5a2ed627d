"""The backplane's data model, without Redis: entries to stream fields and back, stream IDs,
key names, and the `--backplane` address. Pure code, so every case and a fuzzer run here."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multichat.protocol.events import BanEntry
from multichat.server.backplane_address import BackplaneAddress, parse_address
from multichat.server.backplane_codec import (
    CorruptEntry,
    Keys,
    Origin,
    Seat,
    decode_ban,
    decode_entry,
    decode_member,
    decode_mute,
    decode_seat,
    decode_topic,
    encode_fields,
    encode_seat,
    encode_topic,
    moderation_change,
    parse_id,
    stream_id,
)
from multichat.server.backplane_errors import BackplaneError
from multichat.server.history_entries import (
    AWAY,
    BACK,
    JOIN,
    LEAVE,
    MESSAGE,
    MODERATE,
    NICK,
    NOTICE,
    TOPIC,
    StoredEntry,
)


def pairs(fields: list[str]) -> dict[str, str]:
    assert len(fields) % 2 == 0
    return dict(zip(fields[::2], fields[1::2], strict=True))


EXAMPLES = [
    StoredEntry(7, 1749981660.25, MESSAGE, "alice", "hello\nworld"),
    StoredEntry(8, 1749981661.0, MESSAGE, "bob", "psst", recipient="alice"),
    StoredEntry(9, 1749981662.5, MESSAGE, "bob", "waves", extra={"action": True}),
    StoredEntry(9, 1749981663.0, JOIN, "carol"),
    StoredEntry(9, 1749981664.0, LEAVE, "carol", "server lost"),
    StoredEntry(9, 1749981665.0, NICK, "bob", "bobby"),
    StoredEntry(9, 1749981666.0, TOPIC, "alice", "plans"),
    StoredEntry(9, 1749981667.0, NOTICE, "", "host muted bob for 10m"),
    StoredEntry(9, 1749981668.0, AWAY, "bob", "lunch"),
    StoredEntry(9, 1749981669.0, BACK, "bob"),
    StoredEntry(9, 0.0, MESSAGE, "名前", "ünïcödé 🎉 \u202e"),
]


@pytest.mark.parametrize("entry", EXAMPLES, ids=lambda e: f"{e.type}-{e.text[:8]}")
def test_each_kind_of_entry_round_trips_through_its_fields(entry: StoredEntry) -> None:
    origin = Origin("node-1", "token-1", "42", 3)
    id = stream_id(entry.seq, 0 if entry.type == MESSAGE else 2)
    decoded = decode_entry(id, pairs(encode_fields(entry, origin)))
    assert decoded.id == id
    assert decoded.entry == entry
    assert decoded.origin == origin
    assert decoded.is_message == (entry.type == MESSAGE)


def test_a_client_id_keeps_its_type_and_an_entry_is_one_json_record() -> None:
    entry = StoredEntry(1, 1.0, MESSAGE, "a", "x")
    as_number = decode_entry("1-0", pairs(encode_fields(entry, Origin("n", "t", 42))))
    as_string = decode_entry("1-0", pairs(encode_fields(entry, Origin("n", "t", "42"))))
    assert as_number.origin.id == 42 and as_string.origin.id == "42"
    assert encode_fields(entry, Origin("n")) == [
        "d",
        '["message",1.0,"n","a","x",null,null,"",null,0]',
    ]


def test_the_seq_comes_from_the_stream_id_not_the_fields() -> None:
    fields = pairs(encode_fields(StoredEntry(999, 1.0, JOIN, "a"), Origin("n")))
    assert decode_entry("41-3", fields).entry.seq == 41


def test_fields_and_parts_this_version_does_not_know_are_ignored() -> None:
    fields = pairs(encode_fields(StoredEntry(1, 1.0, MESSAGE, "a", "x"), Origin("n")))
    assert decode_entry("1-0", {**fields, "zz": "later"}).entry.text == "x"
    longer = fields["d"][:-1] + ',"a later part",{"and":"another"}]'
    assert decode_entry("1-0", {"d": longer}).entry.text == "x"


texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=50)
# Integers of any size: orjson reads those past 64 bits as floats, and the codec must not.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
entries = st.builds(
    StoredEntry,
    seq=st.integers(0, 2**53),
    ts=st.floats(allow_nan=False, allow_infinity=False),
    type=st.sampled_from([MESSAGE, JOIN, LEAVE, NICK, TOPIC, NOTICE, AWAY, BACK]) | texts,
    sender=texts,
    text=texts,
    recipient=st.none() | texts,
    extra=st.none() | st.dictionaries(texts, json_values, min_size=1, max_size=3),
)
origins = st.builds(
    Origin,
    node=texts,
    member=texts,
    id=st.none() | texts | st.integers(),
    ref=st.integers(min_value=0),
)


@given(entries, origins, st.integers(0, 2**53), st.integers(0, 2**53))
def test_any_entry_and_origin_round_trip(
    entry: StoredEntry, origin: Origin, seq: int, sub: int
) -> None:
    id = stream_id(seq, sub)
    decoded = decode_entry(id, pairs(encode_fields(entry, origin)))
    assert decoded.entry == StoredEntry(
        seq, entry.ts, entry.type, entry.sender, entry.text, entry.recipient, entry.extra
    )
    assert decoded.origin == origin
    assert parse_id(decoded.id) == (seq, sub)


parts = st.lists(json_values | st.floats(), max_size=12)


@given(
    st.text(max_size=30),
    st.dictionaries(st.sampled_from(["d", "zz"]) | texts, texts)
    | parts.map(lambda record: {"d": json.dumps(record)}),
)
def test_garbage_is_refused_with_corrupt_entry_only(id: str, fields: dict[str, str]) -> None:
    try:
        decoded = decode_entry(id, fields)
    except CorruptEntry:
        return
    assert decoded.id == id


GOOD = ["message", 1, "n", "a", "x", None, None, "", None, 0]


def damaged(position: int, value: object) -> dict[str, str]:
    record = list(GOOD)
    record[position] = value
    return {"d": json.dumps(record)}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"t": "message", "ts": "1", "o": "n"},  # the ten-field form of an earlier build
        {"d": "["},
        {"d": "[" * 100_000},
        {"d": '{"t": "message"}'},
        {"d": json.dumps(GOOD[:-1])},
        damaged(0, 1),
        damaged(1, "soon"),
        damaged(1, True),
        damaged(1, 1e400),
        damaged(2, None),
        damaged(3, ["a"]),
        damaged(4, 5),
        damaged(5, 5),
        damaged(6, [1]),
        damaged(7, None),
        damaged(8, True),
        damaged(8, 1.5),
        damaged(9, "x"),
        damaged(9, -1),
    ],
)
def test_a_damaged_entry_says_what_is_wrong(fields: dict[str, str]) -> None:
    with pytest.raises(CorruptEntry, match="entry 1-0"):
        decode_entry("1-0", fields)


@pytest.mark.parametrize("text", ["", "1", "-1", "1-", "a-b", "1-2-3", " 1-2", "1-2 "])
def test_only_stream_ids_parse(text: str) -> None:
    with pytest.raises(CorruptEntry):
        parse_id(text)


def test_stream_ids_order_as_the_room_does() -> None:
    order = [(0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (10, 0), (10, 5)]
    assert [parse_id(stream_id(seq, sub)) for seq, sub in order] == order
    assert sorted(order) == order  # numeric, not string: 10-0 comes after 2-0


def test_a_room_name_stays_inside_its_hash_tag() -> None:
    keys = Keys("ns")
    assert keys.log("den") == "ns:{den}:log"
    for key in (keys.log("a}b{c:d"), keys.meta("a}b"), keys.members("{x}")):
        tag = key[key.index("{") + 1 : key.index("}")]
        assert "{" not in tag and key.count("{") == key.count("}") == 1
    assert keys.log("a}b") != keys.log("a%7Db")  # "%" is encoded too: no two rooms meet
    assert keys.seats("node 1") == "ns:node:{node%201}:seats"


def test_seats_members_and_topics_read_back_and_damage_is_refused() -> None:
    seat = Seat("den", "alice", "Alice", "t1")
    assert decode_seat("t1", encode_seat(seat)) == seat
    record = json.dumps({"name": "Alice", "node": "n", "token": "t1", "since": "3-1"})
    member = decode_member("alice", record)
    assert (member.name, member.key, member.node, member.since) == ("Alice", "alice", "n", "3-1")
    assert decode_topic(encode_topic("plans", "bob")) == ("plans", "bob")
    assert decode_topic("") == ("", "")
    for damaged in ("{", "[]", '{"room": 1, "key": "k", "name": "n"}'):
        with pytest.raises(CorruptEntry):
            decode_seat("t", damaged)
    with pytest.raises(CorruptEntry):
        decode_topic('["only one"]')


# -- the address --


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1", BackplaneAddress("127.0.0.1")),
        ("redis://redis:6380/2", BackplaneAddress("redis", 6380, 2)),
        ("  redis://h:1/  ", BackplaneAddress("h", 1)),
        ("rediss://h.example", BackplaneAddress("h.example", tls=True)),
        ("redis://[::1]:7000/0", BackplaneAddress("::1", 7000)),
        ("redis://:s%40cret@h", BackplaneAddress("h", password="s@cret")),
        ("redis://user:pw@h/3", BackplaneAddress("h", db=3, username="user", password="pw")),
    ],
)
def test_good_addresses(url: str, address: BackplaneAddress) -> None:
    assert parse_address(url) == address


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("127.0.0.1:6379", "does not start with redis://"),
        ("redis//h", "does not start with redis://"),
        ("http://h", "'http' is not redis"),
        ("redis://", "no host"),
        ("redis://h:99999", "port is not a number from 1 to 65535"),
        ("redis://h:0", "port is not"),
        ("redis://h:x", "port is not"),
        ("redis://[::1", "Invalid IPv6"),
        ("redis://h/zero", "not a number"),
        ("redis://h/1/2", "not a number"),
        ("redis://h?db=1", "not supported"),
    ],
)
def test_bad_addresses_say_why_in_one_line(url: str, why: str) -> None:
    with pytest.raises(BackplaneError, match=why) as caught:
        parse_address(url)
    message = str(caught.value)
    assert "\n" not in message and "expected redis://HOST[:PORT][/DB]" in message


def test_an_address_never_shows_its_password() -> None:
    address = parse_address("redis://user:hunter2@h:1/2")
    assert str(address) == "redis://***@h:1/2"
    assert "hunter2" not in repr(address) and "hunter2" not in str(address)
    assert str(parse_address("rediss://[::1]")) == "rediss://[::1]:6379/0"


def moderate(command: str, target: str = "", seconds: float | None = None) -> StoredEntry:
    extra = {"target": target, "reason": "why", "seconds": seconds}
    return StoredEntry(0, 100.0, MODERATE, "host", command, None, extra)


def test_a_moderate_entry_changes_the_rooms_bans_and_lock_only_by_address() -> None:
    ban = json.loads(moderation_change(moderate("ban", "192.0.2.7", 60)))
    assert ban[:2] == ["ban", "192.0.2.7"]
    assert decode_ban("192.0.2.7", ban[2]) == BanEntry("192.0.2.7", "", 160.0, "why", "host")
    forever = json.loads(moderation_change(moderate("ban", "2001:db8::1")))
    assert decode_ban("2001:db8::1", forever[2]).until is None
    by_name = moderate("ban", "192.0.2.9")
    by_name.extra["name"] = "Bob"  # a ban by name, handed on by its address
    assert decode_ban("192.0.2.9", json.loads(moderation_change(by_name))[2]).name == "Bob"
    assert json.loads(moderation_change(moderate("unban", "192.0.2.7"))) == ["unban", "192.0.2.7"]
    assert json.loads(moderation_change(moderate("lock"))) == ["lock"]
    assert json.loads(moderation_change(moderate("unlock"))) == ["unlock"]
    # By name, or on a member: carried out by the member's server, which hands a ban on again.
    for command, target in (("ban", "bob"), ("kick", "bob"), ("op", "bob")):
        assert moderation_change(moderate(command, target)) == ""


def test_a_mute_is_kept_by_the_name_key_it_names_until_a_wall_clock_time() -> None:
    mute = json.loads(moderation_change(moderate("mute", "Bob", 60)))
    assert mute[:2] == ["mute", "bob"]
    assert decode_mute("bob", mute[2]) == 160.0
    forever = json.loads(moderation_change(moderate("mute", "bob")))
    assert decode_mute("bob", forever[2]) is None
    assert json.loads(moderation_change(moderate("unmute", "BOB"))) == ["unmute", "bob"]
    assert moderation_change(moderate("mute", "")) == ""  # no name: nothing to keep


@pytest.mark.parametrize("value", ["{", "[]", '{"until": "soon"}', '{"until": NaN}'])
def test_a_damaged_mute_record_is_refused(value: str) -> None:
    with pytest.raises(CorruptEntry, match="bob"):
        decode_mute("bob", value)


@pytest.mark.parametrize("value", ["{", "[]", '{"until": "soon", "reason": "", "by": "h"}', "{}"])
def test_a_damaged_ban_record_is_refused(value: str) -> None:
    with pytest.raises(CorruptEntry, match=r"192\.0\.2\.7"):
        decode_ban("192.0.2.7", value)
