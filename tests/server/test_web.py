"""HTTP and WebSocket on the room's port: the real server on port 0, real sockets.

A browser gets the page and a WebSocket into the same room as TCP and plain-text members, with
the same limits; the tunnel's loopback listener trusts X-Forwarded-For, the LAN port never.
"""

from __future__ import annotations

import json
import re
from functools import partial
from importlib import resources

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, Ping, Pong, RejectConnection, Request, TextMessage

from chatpeer import PASSWORD, RELAXED, Peer, RoomFixture, WsPeer, read_until, start_room
from multichat.protocol.events import (
    ConnectionClosed,
    Error,
    Hello,
    Join,
    Message,
    Shutdown,
    Welcome,
)
from multichat.protocol.events import Ping as ChatPing
from multichat.protocol.http import CONTENT_SECURITY_POLICY
from multichat.server.limits import Limits
from multichat.server.listeners import ChatServer

STEP = 10  # seconds for any one step


async def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request; the status, headers and body of the answer (read to the close)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def page_file(name: str) -> bytes:
    return resources.files("multichat").joinpath("client", "web", name).read_bytes()


async def test_the_page_is_served_with_a_strict_content_security_policy(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        status, headers, body = await http_exchange(
            room.port, b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\n\r\n"
        )
    assert status == 200
    assert body == page_file("index.html")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["connection"] == "close"


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /app.js HTTP/1.1", 200),
        (b"GET /style.css HTTP/1.1", 200),
        (b"GET /nothing-here HTTP/1.1", 404),
        (b"GET /../pyproject.toml HTTP/1.1", 404),
        (b"GET /%2e%2e/pyproject.toml HTTP/1.1", 404),
        (b"GET /client/web/index.html HTTP/1.1", 404),
        (b"POST / HTTP/1.1", 405),
        (b"GET /ws HTTP/1.1", 426),  # no upgrade asked for
    ],
)
async def test_routes(room: RoomFixture, request_line: bytes, status: int) -> None:
    with trio.fail_after(STEP):
        got, headers, body = await http_exchange(
            room.port, request_line + b"\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
        )
    assert got == status, body
    if status == 200:
        name = request_line.split()[1].decode().lstrip("/")
        assert body == page_file(name)
        assert headers["content-type"].startswith(
            "text/javascript" if name.endswith(".js") else "text/css"
        )


async def test_every_module_the_page_imports_is_served_as_javascript(room: RoomFixture) -> None:
    # A browser refuses a module script served under any other type, and the page then stops
    # at its first import.
    seen: set[str] = set()
    todo = ["app.js"]
    while todo:
        name = todo.pop()
        seen.add(name)
        with trio.fail_after(STEP):
            status, headers, body = await http_exchange(
                room.port, f"GET /{name} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
            )
        assert status == 200 and body == page_file(name), name
        assert headers["content-type"] == "text/javascript; charset=utf-8"
        imported = re.findall(rb'^import [^;]* from "\./([\w.-]+)";$', body, re.MULTILINE)
        todo += [n.decode() for n in imported if n.decode() not in seen]
    assert seen == {
        "app.js",
        "commands.js",
        "frames.js",
        "names.js",
        "outbox.js",
        "reconnect.js",
        "session.js",
        "text.js",
        "view.js",
    }
    assert b'<script type="module" src="app.js"></script>' in page_file("index.html")


async def test_head_has_the_length_and_no_body(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        status, headers, body = await http_exchange(
            room.port, b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == len(page_file("index.html"))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 10_000 + b"\r\n\r\n",
        b"GET \x00\xff HTTP/1.1\r\n\r\n",
    ],
    ids=["no-host", "two-hosts", "version", "huge-head", "garbage"],
)
async def test_a_bad_request_gets_400_and_the_room_goes_on(
    room: RoomFixture, request_bytes: bytes
) -> None:
    with trio.fail_after(STEP):
        status, _, _ = await http_exchange(room.port, request_bytes)
        assert status in (400, 431)
        await room.join("still-here")


async def test_websocket_json_and_plain_text_members_share_one_room(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        web = await WsPeer.join(room.port, "webby")
        tcp = await room.join("tcpy")
        plain = await trio.open_tcp_stream("127.0.0.1", room.port)
        await plain.send_all(f"{PASSWORD}\nplainy\n".encode())
        buffer = bytearray()
        await read_until(plain, b"Type a line", buffer)
        # Lines from different connections have no order of their own until the room gives
        # them one, so each sender waits until the room has taken the line before.
        await web.say("from the browser", "w1")
        await web.send_raw(web.ws.send(TextMessage('{"type":"say","text":"numbered","id":7}')))
        seen_web = [await web.expect(Message) for _ in range(2)]
        await tcp.say("from the terminal", "t1")
        seen_web.append(await web.expect(Message))
        await plain.send_all(b"from nc\n")
        seen_web.append(await web.expect(Message))
        texts = ["from the browser", "numbered", "from the terminal", "from nc"]
        seen_tcp = [await tcp.expect(Message) for _ in texts]
        seen_plain = await read_until(plain, b"from nc\n", buffer)
    for seen in (seen_web, seen_tcp):
        assert [m.text for m in seen if isinstance(m, Message)] == texts
    assert [m.seq for m in seen_web if isinstance(m, Message)] == [
        m.seq for m in seen_tcp if isinstance(m, Message)
    ]
    ids = [m.id for m in seen_web if isinstance(m, Message)]
    assert ids == ["w1", 7, None, None], "the WebSocket sender's echoes carry its ids, as sent"
    assert b"webby: from the browser" in seen_plain


async def test_the_page_own_origin_is_welcome_and_others_are_refused(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        own = await WsPeer.open(room.port, origin=f"http://127.0.0.1:{room.port}")
        await own.send(Hello("own-page", PASSWORD))
        assert isinstance(await own.next_event(), Welcome)
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        ws = WSConnection(ConnectionType.CLIENT)
        evil = [(b"origin", b"https://evil.example")]
        request = Request(host=f"127.0.0.1:{room.port}", target="/ws", extra_headers=evil)
        await stream.send_all(ws.send(request))
        ws.receive_data(await stream.receive_some(65536))
        refused = next(ws.events())
    assert isinstance(refused, RejectConnection) and refused.status_code == 403


async def test_websocket_pings_are_answered_and_binary_is_refused(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        web = await WsPeer.join(room.port, "pinger")
        await web.send_raw(web.ws.send(Ping(b"are you there")))
        pong = None
        while pong is None:
            web.ws.receive_data(await web.stream.receive_some(65536))
            pong = next((e for e in web.ws.events() if isinstance(e, Pong)), None)
        assert pong.payload == b"are you there"
        await web.send_raw(web.ws.send(BytesMessage(b"\x00\x01")))
        error = await web.expect(Error)
        assert isinstance(await web.next_event(), ConnectionClosed)
    assert isinstance(error, Error) and error.code == "bad_frame"
    assert web.closed_with == 1003


async def test_a_message_longer_than_a_frame_is_refused_and_closed(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        web = await WsPeer.join(room.port, "pasty")
        huge = json.dumps({"type": "say", "text": "x" * 20_000})
        await web.send_raw(web.ws.send(TextMessage(huge)))
        error = await web.expect(Error)
        assert isinstance(await web.next_event(), ConnectionClosed)
    assert isinstance(error, Error) and error.code == "frame_too_long"
    assert web.closed_with == 1009


async def test_a_bad_frame_from_a_member_is_answered_and_the_session_goes_on(
    room: RoomFixture,
) -> None:
    with trio.fail_after(STEP):
        web = await WsPeer.join(room.port, "sloppy")
        await web.send_raw(web.ws.send(TextMessage('{"type":"nonsense"}')))
        error = await web.expect(Error)
        await web.say("still here", "1")
        echo = await web.expect(Message)
    assert isinstance(error, Error) and error.code == "bad_frame"
    assert isinstance(echo, Message) and echo.id == "1"


async def test_a_handshake_that_never_finishes_is_closed_at_the_deadline(
    autojump_clock: object,
) -> None:
    limits = RELAXED.replace(handshake_seconds=20)
    async with start_room(limits) as room:
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        start = trio.current_time()
        assert await stream.receive_some(100) == b""
        assert trio.current_time() - start == pytest.approx(20, abs=0.5)
        web = await WsPeer.open(room.port)  # upgraded, then silent: no hello
        start = trio.current_time()
        event = await web.next_event()
        assert isinstance(event, Error) and event.code == "timeout"
        assert trio.current_time() - start == pytest.approx(20, abs=0.5)


async def test_websocket_members_are_pinged_when_quiet(autojump_clock: object) -> None:
    async with start_room(RELAXED) as room:
        web = await WsPeer.join(room.port, "quiet")
        start = trio.current_time()
        ping = await web.expect(ChatPing)
        assert trio.current_time() - start == pytest.approx(90, abs=1)
        assert isinstance(ping, ChatPing)


async def test_websocket_connections_count_toward_the_per_source_cap() -> None:
    limits = RELAXED.replace(connections_per_source=2)
    async with start_room(limits) as room:
        with trio.fail_after(STEP):
            first = await WsPeer.join(room.port, "one")
            second = await room.join("two")
            stream = await trio.open_tcp_stream("127.0.0.1", room.port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = await stream.receive_some(65536)
        assert b"too_many_connections" in refused
        await first.aclose()
        await second.aclose()


async def test_flood_control_delays_websocket_members_too(autojump_clock: object) -> None:
    limits = RELAXED.replace(flood_burst=2, flood_per_second=1.0)
    async with start_room(limits) as room:
        web = await WsPeer.join(room.port, "flooder")
        start = trio.current_time()
        for i in range(4):
            await web.say(f"line {i}", str(i))
        echoes = [await web.expect(Message) for _ in range(4)]
        assert [m.id for m in echoes if isinstance(m, Message)] == ["0", "1", "2", "3"]
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)


async def test_shutdown_reaches_websocket_members_then_a_close_frame(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        web = await WsPeer.join(room.port, "leaving")
        await web.say("last words", "z")
        room.server.shutdown_nowait("the host is done")
        echo = await web.expect(Message)
        notice = await web.expect(Shutdown)
        assert isinstance(await web.next_event(), ConnectionClosed)
        await web.read_close()
    assert isinstance(echo, Message) and echo.id == "z"
    assert isinstance(notice, Shutdown) and notice.reason == "the host is done"
    assert web.closed_with == 1000


async def test_the_tunnel_listener_trusts_x_forwarded_for_and_the_lan_port_does_not() -> None:
    server = ChatServer(PASSWORD, limits=Limits())
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.serve, 0, "127.0.0.1", proxy_port=0))
        assert server.port is not None and server.proxy_port is not None
        with trio.fail_after(STEP):
            # ngrok appends the address it saw; anything before it is the client's own claim.
            forwarded = ((b"x-forwarded-for", b"10.9.9.9, 203.0.113.5"),)
            through = await WsPeer.open(server.proxy_port, extra=forwarded)
            lan = await WsPeer.open(server.port, extra=forwarded)  # held open: counted
            await trio.testing.wait_all_tasks_blocked()
            assert server.ctx.gate._open == {"203.0.113.5": 1, "127.0.0.1": 1}
            await through.send(Hello("far", PASSWORD))
            assert isinstance(await through.next_event(), Welcome)
            await lan.aclose()
        server.shutdown_nowait("test over")


async def test_a_request_through_the_tunnel_over_its_sources_limit_is_refused_in_http() -> None:
    server = ChatServer(PASSWORD, limits=Limits(connections_per_source=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.serve, 0, "127.0.0.1", proxy_port=0))
        assert server.proxy_port is not None
        with trio.fail_after(STEP):
            forwarded = ((b"x-forwarded-for", b"203.0.113.5"),)
            held = await WsPeer.open(server.proxy_port, extra=forwarded)
            stream = await trio.open_tcp_stream("127.0.0.1", server.proxy_port)
            await stream.send_all(
                b"GET /app.js HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n"
            )
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
            await held.aclose()
        server.shutdown_nowait("test over")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"Connection: close" in head
    assert body == b"too many connections from your address (at most 1)\n"


async def test_a_websocket_member_sees_a_tcp_join(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        web = await WsPeer.join(room.port, "watcher")
        await room.join("newcomer")
        join = await web.expect(Join)
    assert isinstance(join, Join) and join.name == "newcomer"


async def test_a_tcp_member_is_unaffected_by_a_websocket_one_leaving(room: RoomFixture) -> None:
    with trio.fail_after(STEP):
        web = await WsPeer.join(room.port, "brief")
        tcp: Peer = await room.join("stays")
        await web.aclose()
        await tcp.say("still fine", "s")
        echo = await tcp.expect(Message)
    assert isinstance(echo, Message) and echo.id == "s"
