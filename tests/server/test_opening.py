"""A connection's way in (opening.py): its first bytes choose, and what came with them counts.

The real server on port 0, real sockets. The dialects' own rules are tested where they live
(test_web.py, test_tls.py, test_proxy_listener.py, test_hardening.py); these are about the
choice itself, and the bytes that arrive in the same read as the bytes that made it.
"""

from __future__ import annotations

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.frame_protocol import FrameProtocol

from chatpeer import PASSWORD, Peer, RoomFixture, WsPeer, read_until
from multichat.protocol.events import Hello, Message, Welcome

STEP = 10  # seconds for any one step


async def test_a_websocket_hello_sent_with_the_upgrade_request_is_answered(
    room: RoomFixture,
) -> None:
    # A client may send its first message right behind the request, in one write, without
    # waiting for the 101: the server must read it from what came with the request.
    ws = WSConnection(ConnectionType.CLIENT)
    with trio.fail_after(STEP):
        stream = await trio.open_tcp_stream("127.0.0.1", room.port)
        peer = WsPeer(stream, ws)
        hello = peer.conn.send(Hello("eager", PASSWORD)).decode().rstrip("\n")
        # wsproto sends no message before the 101; its frame layer makes the same masked frame.
        first_frame = FrameProtocol(client=True, extensions=[]).send_data(hello, fin=True)
        await stream.send_all(
            ws.send(Request(host=f"127.0.0.1:{room.port}", target="/ws")) + first_frame
        )
        accepted = False
        while not accepted:
            data = await stream.receive_some(65536)
            assert data, "closed during the WebSocket handshake"
            ws.receive_data(data)
            for event in ws.events():
                if accepted:  # the welcome, in the same read as the 101: the peer's to read
                    assert isinstance(event, TextMessage), event
                    peer.conn.receive_data(event.data.encode() + b"\n")
                    continue
                assert isinstance(event, AcceptConnection), event
                accepted = True
        welcome = await peer.next_event()
        assert isinstance(welcome, Welcome) and welcome.name == "eager"
        other = await room.join("other")
        await other.say("hello eager", "o1")
        assert (await peer.expect(Message)).text == "hello eager"


async def test_each_connection_chooses_its_own_dialect_on_one_port(room: RoomFixture) -> None:
    # The same port, four ways in at once, each decided by its own first bytes alone.
    with trio.fail_after(STEP):
        tcp = await Peer.join(room.port, "jsonny")
        web = await WsPeer.join(room.port, "webby")
        plain = await trio.open_tcp_stream("127.0.0.1", room.port)
        await plain.send_all(f"{PASSWORD}\nplainy\n".encode())
        buffer = bytearray()
        await read_until(plain, b"Type a line", buffer)
        page = await trio.open_tcp_stream("127.0.0.1", room.port)
        await page.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = bytearray()
        while chunk := await page.receive_some(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        await tcp.say("one port", "j1")
        for peer in (tcp, web):
            assert (await peer.expect(Message)).text == "one port"
        assert b"jsonny: one port" in await read_until(plain, b"one port\n", buffer)
