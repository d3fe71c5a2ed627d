"""Every limit of a public room, proven against the real server on a loopback port.

Deadlines, idle timeouts and flood timing run on trio's mock clock (`autojump_clock`): real
sockets, virtual time, so "closed after 20 s" is checked to the millisecond in no time at all.
Every test client comes from 127.0.0.1, so a test lifts the per-source limits it is not about;
the limits that need distinct sources are proven through the tunnel listener in
test_proxy_listener.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
from pathlib import Path

import pytest
import trio

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, read_until, start_room
from multichat.protocol import wire
from multichat.protocol.events import (
    ConnectionClosed,
    Error,
    Event,
    Hello,
    Leave,
    Members,
    Message,
    Ping,
    Pong,
    Quit,
    Say,
    Shutdown,
    Who,
)
from multichat.server.entries import Dialect
from multichat.server.limits import Limits, load_limits
from multichat.server.room import Room
from roomoutlet import RecordingOutlet

# The per-source limits lifted, every other limit at its default.
PER_SOURCE_LIFTED = Limits(
    connections_per_source=RELAXED.connections_per_source,
    unauthenticated_per_source=RELAXED.unauthenticated_per_source,
)


async def read_to_eof(stream: trio.SocketStream, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def events_until_closed(peer: Peer) -> list[Event]:
    events: list[Event] = []
    while True:
        event = await peer.next_event()
        if isinstance(event, ConnectionClosed):
            return events
        events.append(event)


async def refused_with(peer: Peer, hello: Hello) -> Error:
    await peer.send(hello)
    event = await peer.next_event()
    assert isinstance(event, Error), event
    assert isinstance(await peer.next_event(), ConnectionClosed)
    return event


# -- frame and text size --


async def test_text_up_to_the_limit_arrives_whole_and_longer_is_refused(
    room: RoomFixture,
) -> None:
    with trio.fail_after(10):
        alice = await room.join("alice")
        bob = await room.join("bob")
        longest = "\U0001f600" * 4000  # 4,000 characters of 4 bytes: the frame limit holds it
        assert len(wire.encode(Say(longest))) <= wire.MAX_FRAME
        await alice.say(longest)
        assert (await bob.expect(Message)).text == longest  # type: ignore[attr-defined]
        await alice.say("x" * 4001, id="long")
        error = await alice.expect(Error)
        assert isinstance(error, Error) and error.code == "too_long"
        await alice.say("still here")  # a refused message does not end the session
        assert (await bob.expect(Message)).text == "still here"  # type: ignore[attr-defined]


@pytest.mark.parametrize("stage", ["json member", "json visitor", "text visitor"])
async def test_no_newline_within_the_frame_limit_closes(stage: str) -> None:
    async with start_room() as room:
        with trio.fail_after(20):
            watcher = await room.join("watcher")
            if stage == "json member":
                peer = await room.join("flooder")
                stream = peer.stream
                start = b'{"type":"say","text":"'
            else:
                stream = await trio.open_tcp_stream("127.0.0.1", room.port)
                start = b"{" if stage == "json visitor" else b"x"
            await stream.send_all(start)
            sent = len(start)
            with pytest.raises(trio.BrokenResourceError):
                for _ in range(10 * 1024):  # 10 MB at most
                    await stream.send_all(b"x" * 1024)
                    sent += 1024
            assert sent < 10 * 1024 * 1024
            reply = await read_to_eof(stream)
            assert b"frame_too_long" in reply or b"no end of line" in reply or reply == b""
            if stage == "json member":
                leave = await watcher.expect(Leave)
                assert leave == Leave("flooder", "disconnected", leave.ts)  # type: ignore[attr-defined]
            assert room.server.ctx.gate._unauth == {}  # the visitor's slot is free again


async def test_a_frame_over_the_limit_gets_an_error_frame_then_closes(
    room: RoomFixture,
) -> None:
    with trio.fail_after(10):
        alice = await room.join("alice")
        await alice.stream.send_all(b'{"type":"say","text":"' + b"y" * wire.MAX_FRAME + b'"}\n')
        events = await events_until_closed(alice)
        assert [e.code for e in events if isinstance(e, Error)] == ["frame_too_long"]


# -- names --


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 33,
        "zero\u200bwidth",
        "\u202eevil",
        "iso\u2066late",
        "esc\x1b[2J",
        "bell\x07",
        "csi\x9b",
        "car\rriage",
        "line\nbreak",
        "\u3164",  # Hangul filler: draws nothing
    ],
    ids=repr,
)
async def test_bad_names_are_refused(room: RoomFixture, name: str) -> None:
    with trio.fail_after(10):
        error = await refused_with(await Peer.open(room.port), Hello(name, PASSWORD))
        assert error.code == "bad_name"


async def test_name_limits_and_confusable_collisions(room: RoomFixture) -> None:
    with trio.fail_after(10):
        longest = await room.join("x" * 32)
        assert longest.welcome is not None and longest.welcome.name == "x" * 32
        admin = await room.join("admin")
        for lookalike in ("\u0430dmin", "ADMIN", "\uff41dmin", "adm\u0131n"):
            error = await refused_with(await Peer.open(room.port), Hello(lookalike, PASSWORD))
            assert error.code == "name_taken", lookalike
        await admin.aclose()
        await longest.aclose()


# -- the handshake deadline --


async def test_a_silent_socket_is_prompted_then_closed_at_the_deadline(
    autojump_clock: object,
) -> None:
    async with start_room(PER_SOURCE_LIFTED) as room:
        start = trio.current_time()
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        buf = bytearray()
        assert await read_until(stream, b"Password: ", buf) == b"Password: "
        rest = await read_to_eof(stream)
        assert b"too slow to log in" in rest
        assert 20.0 <= trio.current_time() - start <= 20.5


async def _dribble(stream: trio.SocketStream, byte: bytes) -> None:
    for _ in range(200):  # 50 s
        await stream.send_all(byte)
        await trio.sleep(0.25)


async def test_a_slowloris_gets_no_more_than_the_deadline(autojump_clock: object) -> None:
    """One byte every 0.25 s, never finishing a line: each prompt has 20 s, not each byte."""
    async with start_room(PER_SOURCE_LIFTED) as room:
        for first in (b"{", b"c"):  # JSON, then plain text
            start = trio.current_time()
            stream = await trio.open_tcp_stream("127.0.0.1", room.port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_dribble, stream, first)
                reply = await read_to_eof(stream)
                nursery.cancel_scope.cancel()
            assert b"too slow to log in" in reply, first
            assert 20.0 <= trio.current_time() - start <= 20.5, first
            await stream.aclose()


async def test_a_person_typing_gets_a_fresh_deadline_at_each_prompt(
    autojump_clock: object,
) -> None:
    async with start_room(PER_SOURCE_LIFTED) as room:
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        buf = bytearray()
        await read_until(stream, b"Password: ", buf)
        await trio.sleep(15)
        await stream.send_all(PASSWORD.encode() + b"\n")
        await read_until(stream, b"Name: ", buf)
        await trio.sleep(15)
        await stream.send_all("admin\u200b\n".encode())
        assert b"invisible" in await read_until(stream, b"Name: ", buf)
        await trio.sleep(15)
        await stream.send_all(b"slow typist\n")
        assert (await read_until(stream, b"leave.\n", buf)).startswith(b"Welcome")
        assert room.server.room.names() == ("slow typist",)


async def test_200_silent_sockets_hold_no_slot_a_real_client_needs(
    autojump_clock: object,
) -> None:
    async with start_room(PER_SOURCE_LIFTED) as room:
        start = trio.current_time()
        closed_at: list[float] = []

        async def silent() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", room.port)
            data = await read_to_eof(stream)
            assert data.startswith(b"Password: ") and b"too slow to log in" in data
            closed_at.append(trio.current_time() - start)
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(silent)
            await trio.sleep(1)  # every silent socket is in, and has had its prompt
            assert room.server.ctx.gate._unauth_total == 200
            joined_at = trio.current_time()
            alice = await room.join("alice")
            assert trio.current_time() - joined_at < 0.01  # at once
            await alice.say("hi")
            assert (await alice.expect(Message)).text == "hi"  # type: ignore[attr-defined]
        assert len(closed_at) == 200
        assert all(20.0 <= t <= 20.5 for t in closed_at), (min(closed_at), max(closed_at))
        assert room.server.ctx.gate._unauth_total == 0
        assert room.server.room.names() == ("alice",)


# -- connection slots --


async def test_unfinished_logins_are_capped_per_source_and_overall() -> None:
    limits = RELAXED.replace(unauthenticated_per_source=3)
    async with start_room(limits) as room:
        with trio.fail_after(10):
            silent = [await trio.open_tcp_stream("127.0.0.1", room.port) for _ in range(3)]
            await trio.sleep(0.1)
            fourth = await Peer.open(room.port)
            refusal = await fourth.next_event()
            assert refusal == Error(
                "too_many_connections",
                "too many unfinished logins from your address; finish one first",
            )
            assert isinstance(await fourth.next_event(), ConnectionClosed)
            for stream in silent:
                await stream.aclose()
            await trio.sleep(0.1)
            await room.join("alice")  # the slots are free again
    limits = RELAXED.replace(unauthenticated_total=5)
    async with start_room(limits) as room:
        with trio.fail_after(10):
            silent = [await trio.open_tcp_stream("127.0.0.1", room.port) for _ in range(5)]
            await trio.sleep(0.1)
            sixth = await Peer.open(room.port)
            refusal = await sixth.next_event()
            assert isinstance(refusal, Error) and "busy with logins" in refusal.message
            for stream in silent:
                await stream.aclose()


async def test_eight_connections_per_source() -> None:
    async with start_room(Limits()) as room:  # every default
        with trio.fail_after(10):
            members = [await room.join(f"member{n}") for n in range(8)]
            ninth = await Peer.open(room.port)
            assert await ninth.next_event() == Error(
                "too_many_connections", "too many connections from your address (at most 8)"
            )
            assert isinstance(await ninth.next_event(), ConnectionClosed)
            await members[0].send(Quit())
            while not isinstance(await members[0].next_event(), ConnectionClosed):
                pass  # what was queued before the quit still arrives
            await room.join("dan")  # a slot came free


# -- wrong passwords --


class CountingSecret:
    """The room password, counting how often it is compared (that is, hashed)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def matches(self, attempt: str) -> bool:
        self.calls += 1
        return self.inner.matches(attempt)  # type: ignore[attr-defined, no-any-return]


async def test_twenty_wrong_passwords_are_throttled_before_any_hashing(
    autojump_clock: object,
) -> None:
    async with start_room(PER_SOURCE_LIFTED) as room:
        counter = CountingSecret(room.server.ctx.password)
        room.server.ctx.password = counter  # type: ignore[assignment]
        codes = []
        for n in range(20):
            error = await refused_with(await Peer.open(room.port), Hello(f"guess{n}", f"pw{n}"))
            codes.append(error.code)
        assert codes == ["bad_password"] * 3 + ["throttled"] * 17
        assert counter.calls == 3
        # Even the right password waits: the throttle decides before the password is looked at.
        error = await refused_with(await Peer.open(room.port), Hello("alice", PASSWORD))
        assert error.code == "throttled" and "try again in 60 s" in error.message
        # Plain text is throttled the same way.
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        await stream.send_all(b"guess\n")
        assert b"too many wrong passwords" in await read_to_eof(stream)
        assert counter.calls == 3
        await trio.sleep(60)  # a minute later the window has passed
        assert (await room.join("alice")).welcome is not None


async def test_wrong_passwords_have_a_global_budget(autojump_clock: object) -> None:
    limits = PER_SOURCE_LIFTED.replace(
        failed_passwords_per_minute=1000, failed_passwords_global_per_minute=10
    )
    async with start_room(limits) as room:
        codes = []
        for n in range(12):
            error = await refused_with(await Peer.open(room.port), Hello("x", f"pw{n}"))
            codes.append(error.code)
        assert codes == ["bad_password"] * 10 + ["throttled"] * 2


# -- flood control --


async def test_a_flood_is_delayed_to_the_limit_and_nothing_is_lost(
    autojump_clock: object,
) -> None:
    """100 messages in one write: 5 at once, then 2 a second; others are not slowed at all."""
    async with start_room(Limits()) as room:  # every default
        flooder = await room.join("flooder")
        other = await room.join("other")
        watcher = await room.join("watcher")
        start = trio.current_time()
        seen: list[tuple[float, str, str]] = []
        echoes = 0

        async def watch() -> None:
            while len(seen) < 101:
                event = await watcher.next_event()
                assert not isinstance(event, (ConnectionClosed, Leave))
                if isinstance(event, Message):
                    seen.append((trio.current_time() - start, event.sender, event.text))

        async def read_echoes() -> None:
            nonlocal echoes
            while echoes < 100:
                event = await flooder.next_event()
                assert not isinstance(event, (ConnectionClosed, Error)), event
                if isinstance(event, Message) and event.sender == "flooder":
                    echoes += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            nursery.start_soon(read_echoes)
            await flooder.stream.send_all(
                b"".join(wire.encode(Say(f"m{n}", str(n))) for n in range(100))
            )
            await trio.sleep(10.1)
            said_at = trio.current_time() - start
            await other.say("am I slowed down?")
        floods = [(t, text) for t, sender, text in seen if sender == "flooder"]
        assert [text for _, text in floods] == [f"m{n}" for n in range(100)]
        for n, (t, _) in enumerate(floods):
            assert t == pytest.approx(max(0.0, (n - 4) / 2), abs=0.01), n
        [(t, _, _)] = [s for s in seen if s[1] == "other"]
        assert t - said_at < 0.01
        assert room.server.room.names() == ("flooder", "other", "watcher")


async def test_member_lists_and_pings_count_as_flooding_too(autojump_clock: object) -> None:
    """Answers cost the server work: 20 requests in one write get 5 answers at once, then 2 a
    second, like messages."""
    async with start_room(Limits()) as room:
        asker = await room.join("asker")
        start = trio.current_time()
        requests = [Who() if n % 2 else Ping(str(n)) for n in range(20)]
        await asker.stream.send_all(b"".join(wire.encode(r) for r in requests))
        times = []
        while len(times) < 20:
            event = await asker.next_event()
            assert isinstance(event, Members | Pong), event
            times.append(trio.current_time() - start)
        assert times == pytest.approx([max(0.0, (n - 4) / 2) for n in range(20)], abs=0.01)


async def test_a_multi_line_paste_counts_once(autojump_clock: object) -> None:
    async with start_room(Limits()) as room:
        paster = await room.join("paster")
        start = trio.current_time()
        paste = "\n".join(f"line {n}" for n in range(100))
        await paster.stream.send_all(b"".join(wire.encode(Say(paste)) for _ in range(6)))
        times = []
        while len(times) < 6:
            event = await paster.expect(Message)
            assert isinstance(event, Message) and event.text == paste
            times.append(trio.current_time() - start)
        assert times == pytest.approx([0, 0, 0, 0, 0, 0.5], abs=0.01)


async def test_sustained_flooding_is_disconnected_with_a_reason(autojump_clock: object) -> None:
    async with start_room(Limits()) as room:
        flooder = await room.join("flooder")
        watcher = await room.join("watcher")
        start = trio.current_time()
        await flooder.stream.send_all(b"".join(wire.encode(Say(f"m{n}")) for n in range(300)))
        events = await events_until_closed(flooder)
        echoed = [e.text for e in events if isinstance(e, Message)]
        assert events[-1] == Error("flooding", "disconnected for flooding the room")
        assert 60 <= trio.current_time() - start <= 62
        received = []
        while True:
            event = await watcher.next_event()
            if isinstance(event, Message):
                received.append(event.text)
            elif isinstance(event, Leave):
                assert event.reason == "flooding"
                break
        assert received == echoed == [f"m{n}" for n in range(len(echoed))]


# -- the outbox --


async def test_a_member_that_asks_but_never_reads_is_dropped_at_its_outbox_limit() -> None:
    """Replies for one member alone (pongs, member lists) count toward its outbox too."""
    async with start_room() as room:
        with trio.fail_after(30):
            watcher = await room.join("watcher")
            asker = await room.join("asker")
            asker.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            ping = wire.encode(Ping("p" * 1000))
            sent = 0
            with pytest.raises(trio.BrokenResourceError):
                for _ in range(20_000):  # 20 MB of pongs at most
                    await asker.stream.send_all(ping * 10)
                    sent += 10
            assert sent < 20_000
            leave = await watcher.expect(Leave)
            assert isinstance(leave, Leave) and (leave.name, leave.reason) == ("asker", "too slow")


def test_history_shown_to_a_new_member_does_not_count_toward_its_outbox() -> None:
    """A room whose last 20 messages are long pastes must not drop everyone who joins."""
    room = Room(limits=Limits())
    outlets: list[RecordingOutlet] = []

    def join(name: str) -> object:
        outlets.append(RecordingOutlet())
        return room.join(
            name,
            dialect=Dialect.JSON,
            outlet=outlets[-1],
            welcome=lambda display, names: b"welcome\n",
        )

    poster = join("poster")
    paste = "\U0001f600" * 4000  # 16 KB a frame: 20 of them are 320 KB of history
    for _ in range(20):
        room.post(poster, paste)  # type: ignore[arg-type]
        room.log.take_nowait(poster)  # type: ignore[arg-type]
    newcomer = join("newcomer")
    room.post(poster, paste)  # type: ignore[arg-type]
    assert [outlet.kicked for outlet in outlets] == [[], []]
    assert room.log.take_nowait(newcomer).count(b'"type":"message"') == 21  # type: ignore[arg-type]


# -- escape injection --

INJECTIONS = [
    "\x1b[2J",  # clear the screen
    "\x1b]0;pwned\x07",  # OSC 0: the window title
    "\x1b]52;c;cm0gLXJmIH4=\x07",  # OSC 52: the clipboard
    "\x1bP+q544e\x1b\\",  # DCS
    "\x9b2J",  # 8-bit CSI
    "over\rwrite",  # a bare CR
    "abc\u202edef",  # right-to-left override
]
# Every character that must not reach a terminal: C0 but LF, DEL, C1, bidi controls.
FORBIDDEN = (
    {chr(c) for c in range(0x20)} - {"\n"}
    | {chr(c) for c in range(0x7F, 0xA0)}
    | set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
)


def assert_clean(text: str, where: str) -> None:
    bad = {ch for ch in text if ch in FORBIDDEN}
    assert not bad, f"{where}: {sorted(map(hex, map(ord, bad)))} in {text!r}"


async def test_no_escape_sequence_or_bidi_control_reaches_anyone(room: RoomFixture) -> None:
    with trio.fail_after(20):
        json_reader = await room.join("reader")
        json_sender = await room.join("sender")
        for payload in INJECTIONS:  # as names: refused, in plain text too
            error = await refused_with(await Peer.open(room.port), Hello(payload, PASSWORD))
            assert error.code == "bad_name"
            text = await trio.open_tcp_stream("127.0.0.1", room.port)
            text_buf = bytearray()
            await text.send_all(f"{PASSWORD}\n".encode() + payload.encode() + b"\n")
            await read_until(text, b"Name: ", text_buf)
            assert (await read_until(text, b"Name: ", text_buf)).startswith(b"! name contains")
            await text.aclose()
        text = await trio.open_tcp_stream("127.0.0.1", room.port)
        text_buf = bytearray()
        await text.send_all(f"{PASSWORD}\ntypist\n".encode())
        await read_until(text, b"leave.\n", text_buf)
        for payload in INJECTIONS:  # as messages, from JSON and from plain text
            await json_sender.say(payload)
            await text.send_all(payload.encode() + b"\n")
        await text.send_all(b"raw \x9b2J byte\n")  # not UTF-8: refused
        await json_sender.stream.send_all(b'{"type":"say","text":"\x9b2J"}\n')
        await json_sender.send(Quit("\x1b]0;bye\x07\r\n* admin joined"))  # a leave reason
        events: list[Event] = []

        async def read_until_left(name: str) -> None:
            while True:
                event = await json_reader.next_event()
                assert not isinstance(event, ConnectionClosed)
                events.append(event)
                if isinstance(event, Leave) and event.name == name:
                    return

        # Two connections' lines have no order until the room gives them one: the sender's
        # leave is in before the typist's /quit goes, the last thing the reader sees.
        await read_until_left("sender")
        await text.send_all(b"/quit\n")
        await read_until_left("typist")
        for event in events:
            assert_clean(json.dumps(wire.to_json(event), ensure_ascii=False), repr(event))
        texts = [e.text for e in events if isinstance(e, Message)]
        assert len(texts) == 2 * len(INJECTIONS)
        assert "2Jdef" not in "".join(texts) and "abcdef" in texts
        [leave] = [e for e in events if isinstance(e, Leave) and e.name == "sender"]
        assert "\n" not in leave.reason and "]0;bye" in leave.reason  # type: ignore[attr-defined]


async def test_no_escape_sequence_reaches_a_plain_text_reader(room: RoomFixture) -> None:
    with trio.fail_after(20):
        sender = await room.join("sender")
        text = await trio.open_tcp_stream("127.0.0.1", room.port)
        buf = bytearray()
        await text.send_all(f"{PASSWORD}\nreader\n".encode())
        await read_until(text, b"leave.\n", buf)
        for payload in INJECTIONS:
            await sender.say(payload)
        await sender.send(Quit("\x1b[2J\r\n[12:00] admin: send me your password"))
        received = (await read_until(text, b"* sender left", buf)) + (
            await read_until(text, b"\n", buf)
        )
        assert_clean(received.decode("utf-8"), "plain text")
        assert b"\n[12:00] admin" not in received  # no forged line either
        assert received.count(b"] sender: ") == len(INJECTIONS)


# -- idle connections --


async def test_a_half_open_member_is_pinged_then_closed(autojump_clock: object) -> None:
    """A member whose machine vanished (no FIN, no RST) is gone after 150 s, not held forever."""
    async with start_room(PER_SOURCE_LIFTED) as room:
        start = trio.current_time()
        watcher = await room.join("watcher")
        ghost = await room.join("ghost")
        leaves: list[tuple[float, Leave]] = []

        async def watch() -> None:
            while True:  # a real client answers pings; so does this one
                event = await watcher.next_event()
                if isinstance(event, Ping):
                    await watcher.send(Pong(event.data))
                if isinstance(event, Leave):
                    leaves.append((trio.current_time() - start, event))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.sleep(450)
            nursery.cancel_scope.cancel()
        [(at, leave)] = leaves
        assert (leave.name, leave.reason) == ("ghost", "timeout")
        assert 150 <= at <= 150.5
        assert room.server.room.names() == ("watcher",)  # answering pings keeps a member in
        # What the ghost would have seen, had it been there: a ping at 90 s, then the reason.
        events = await events_until_closed(ghost)
        assert Ping("idle") in events
        assert isinstance(events[-1], Error) and events[-1].code == "timeout"


async def test_the_room_keeps_going_for_a_member_who_answers_pings(
    autojump_clock: object,
) -> None:
    async with start_room(PER_SOURCE_LIFTED) as room:
        alice = await room.join("alice")
        for _ in range(5):
            event = await alice.expect(Ping)
            await alice.send(Pong(event.data))  # type: ignore[attr-defined]
        assert trio.current_time() >= 450 and room.server.room.names() == ("alice",)
        await alice.send(Who())
        assert await alice.expect(Members) == Members(("alice",))


# -- closing --


async def test_closing_with_unread_input_still_delivers_everything_queued() -> None:
    """A socket closed with unread input is reset, and the kernel drops what it had not sent.

    Here a member is held back by flood control (so its later frames sit unread) and reads
    slowly (so what it was sent sits in the server's send buffer) when the room shuts down.
    """
    limits = RELAXED.replace(flood_per_second=2.0, outbox_bytes=10 * 1024 * 1024)
    async with start_room(limits) as room:
        with trio.fail_after(20):
            slow = await Peer.open(room.port)
            slow.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await slow.send(Hello("slow", PASSWORD))
            poster = await room.join("poster")
            paste = "p" * 4000
            for _ in range(5):
                await poster.say(paste)
            await slow.stream.send_all(
                b"".join(wire.encode(Say(f"s{n}" + "x" * 1000)) for n in range(40))
            )
            await trio.sleep(0.2)
            room.server.shutdown_nowait("bye")
            await trio.sleep(0.2)
            events = await events_until_closed(slow)
            assert [e.text for e in events if isinstance(e, Message) and e.sender == "poster"] == [
                paste
            ] * 5
            assert events[-1] == Shutdown("bye")


# -- the documentation --


def test_every_limit_is_documented_with_its_default(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "limits.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", doc, re.MULTILINE))
    defaults = Limits()
    assert set(rows) == {f.name for f in dataclasses.fields(Limits)}
    for name, shown in rows.items():
        assert shown.split()[0] == str(getattr(defaults, name)), name
    [example] = re.findall(r"```toml\n(.*?)```", doc, re.DOTALL)
    (tmp_path / "room.toml").write_text(example)
    assert load_limits(tmp_path / "room.toml").connections_per_source == 16
