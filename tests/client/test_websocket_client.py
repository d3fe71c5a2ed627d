"""The terminal client over WebSocket: the real server, TLS, ngrok's answers, the real CLI.

Everything listens on 127.0.0.1 port 0 inside the test: the room, a TLS-terminating forwarder
in front of it (standing in for ngrok's HTTPS edge), scripted WebSocket servers (wsproto's
server side) for what a real room never does, and fake HTTP servers answering as ngrok does.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from test_client import Recorder, is_text
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws

from chatpeer import PASSWORD, RELAXED, Peer, start_room
from multichat.client import reconnect
from multichat.client.address import Address, parse_address
from multichat.client.connection import ChatClient
from multichat.client.login import ConnectFailed, NotMultichat, login
from multichat.client.updates import Ending, Joined, Lost
from multichat.client.websocket import WebSocketError, WebSocketStream, open_websocket
from multichat.protocol.events import Message
from multichat.server.listeners import ChatServer

LOCAL = "127.0.0.1"
# A subprocess imports trio, typer and urwid before it does anything: allow for a slow machine.
PROCESS_SECONDS = 20


async def joined(address: Address, name: str) -> tuple[ChatClient, Recorder]:
    recorder = Recorder()
    client = ChatClient(address, name, PASSWORD, recorder)
    await client.join()
    return client, recorder


# -- helpers: a TLS edge, ngrok's answers, scripted WebSocket servers --


async def _pipe(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel()


@asynccontextmanager
async def tls_forwarder(target_port: int, cert: trustme.LeafCert) -> AsyncIterator[int]:
    """A TLS-terminating forwarder to the room's port, as ngrok's HTTPS edge is; its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    async def forward(client: trio.SocketStream) -> None:
        tls = trio.SSLStream(client, context, server_side=True)
        try:
            await tls.do_handshake()
            upstream = await trio.open_tcp_stream(LOCAL, target_port)
        except (trio.BrokenResourceError, OSError):
            await trio.aclose_forcefully(tls)  # the client refused our certificate
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pipe, tls, upstream, nursery.cancel_scope)
            nursery.start_soon(_pipe, upstream, tls, nursery.cancel_scope)
        await trio.aclose_forcefully(upstream)
        await trio.aclose_forcefully(tls)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, forward, 0, host=LOCAL))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@asynccontextmanager
async def http_server(response: bytes) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers every request with `response`, then closes; its port and the heads it got."""
    heads: list[bytes] = []

    async def answer(stream: trio.SocketStream) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 16384:
                data = await stream.receive_some(4096)
                if not data:
                    break
                head += data
            heads.append(head)
            await stream.send_all(response)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, answer, 0, host=LOCAL))
        yield listeners[0].socket.getsockname()[1], heads
        nursery.cancel_scope.cancel()


def http_response(status: str, body: bytes, *, length: bool = True) -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: text/html\r\nconnection: close\r\n"
    if length:
        head += f"content-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


# ngrok's pages are long HTML with the code in the middle; a long body checks it is found there.
NGROK_OFFLINE_PAGE = (
    b"<!DOCTYPE html><html><head><title>ngrok</title></head><body>"
    + b"<!-- padding -->" * 400
    + b"<p>The endpoint abc.ngrok-free.app is offline.</p><p>ERR_NGROK_3200</p></body></html>"
)
NGROK_UPSTREAM_PAGE = (
    b"<html><body><p>Traffic successfully made it to the ngrok agent, but the agent failed "
    b"to establish a connection to the upstream web service at localhost:5002.</p>"
    b"<p>ERR_NGROK_8012</p></body></html>"
)


class ScriptedServer:
    """wsproto's server side on one accepted connection, for the test to drive."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.pending: deque[ws.Event] = deque()

    async def next(self) -> ws.Event | None:
        """The next event from the client; None once its connection has ended."""
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                return None
        return self.pending.popleft()

    async def accept(self) -> ws.Request:
        request = await self.next()
        assert isinstance(request, ws.Request), request
        await self.send(ws.AcceptConnection())
        return request

    async def send(self, event: ws.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def message(self) -> ws.Event | None:
        """The next event that is not a pong."""
        while isinstance(event := await self.next(), ws.Pong):
            pass
        return event


Script = Callable[[ScriptedServer], Awaitable[None]]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[int]:
    """A WebSocket server running `script` on its first connection; its port."""

    async def serve(stream: trio.SocketStream) -> None:
        try:
            await script(ScriptedServer(stream))
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host=LOCAL))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def open_scripted(port: int) -> WebSocketStream:
    tcp = await trio.open_tcp_stream(LOCAL, port)
    return await open_websocket(tcp, f"{LOCAL}:{port}", "/ws")


# -- with the real server --


async def test_websocket_and_tcp_members_chat_in_one_room() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            alice, alice_saw = await joined(parse_address(f"http://{LOCAL}:{room.port}"), "alice")
            bob = await room.join("bob")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                line = alice.say_nowait("hi bob, from a WebSocket")
                echo = await alice_saw.wait_for(is_text("hi bob, from a WebSocket"))
                assert isinstance(echo, Message) and echo.id == line.id
                heard = await bob.expect(Message)
                assert isinstance(heard, Message)
                assert (heard.sender, heard.text) == ("alice", "hi bob, from a WebSocket")
                await bob.say("hi alice, from TCP")
                await bob.say("and a second line")
                first = await alice_saw.wait_for(is_text("hi alice, from TCP"))
                second = await alice_saw.wait_for(is_text("and a second line"))
                assert alice_saw.events.index(first) < alice_saw.events.index(second)
                assert alice.roster.members == ["alice", "bob"]
                alice.quit_nowait()
            await bob.aclose()


async def test_wss_through_a_tls_edge(
    ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    cert = ca.issue_cert("localhost", LOCAL)
    with trio.fail_after(10):
        async with start_room() as room, tls_forwarder(room.port, cert) as edge:
            address = parse_address(f"https://{LOCAL}:{edge}/some/page?the=link")
            assert (address.transport, address.path) == ("wss", "/ws")
            alice, alice_saw = await joined(address, "alice")
            bob = await room.join("bob")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alice.run)
                alice.say_nowait("over TLS")
                heard = await bob.expect(Message)
                assert isinstance(heard, Message) and heard.text == "over TLS"
                await bob.say("back over TLS")
                await alice_saw.wait_for(is_text("back over TLS"))
                alice.quit_nowait()
            await bob.aclose()


@pytest.mark.parametrize(
    ("names", "says"),
    [
        # No SSL_CERT_FILE: the system's store does not know a test CA.
        (("localhost", LOCAL), "not trusted (unable to get local issuer certificate)"),
        # Trusted CA, but the certificate is for another name.
        (("localhost",), "certificate is not valid for '127.0.0.1'"),
    ],
)
async def test_untrusted_certificate_is_one_line(
    ca: trustme.CA,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
    names: tuple[str, ...],
    says: str,
) -> None:
    if len(names) == 1:
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with trio.fail_after(10):
        async with start_room() as room, tls_forwarder(room.port, ca.issue_cert(*names)) as edge:
            with pytest.raises(ConnectFailed) as info:
                await login(parse_address(f"https://{LOCAL}:{edge}"), "alice", PASSWORD)
    message = str(info.value)
    assert message.startswith(f"the certificate of {LOCAL} is not trusted")
    assert says in message
    assert "SSL_CERT_FILE" in message
    assert "\n" not in message


async def test_tls_to_a_plain_port_says_so() -> None:
    with trio.fail_after(10):
        async with start_room() as room:
            with pytest.raises(ConnectFailed, match=r"does not speak TLS, use http://"):
                await login(parse_address(f"https://{LOCAL}:{room.port}"), "alice", PASSWORD)


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_reconnects_over_websocket_after_the_server_drops(
    transport: str,
    ca: trustme.CA,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The room dies without a word and comes back on its port; typed lines are delivered."""
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    monkeypatch.setattr(reconnect, "RECONNECT_FIRST_DELAY", 0.01)
    monkeypatch.setattr(reconnect, "RECONNECT_MAX_DELAY", 0.05)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            first = ChatServer(PASSWORD, limits=RELAXED)
            first_scope = trio.CancelScope()
            port = await nursery.start(_serve_until_cancelled, first, first_scope)
            if transport == "wss":
                edge = await nursery.start(_run_forwarder, port, ca.issue_cert(LOCAL))
                address = parse_address(f"wss://{LOCAL}:{edge}/ws")
            else:
                address = parse_address(f"ws://{LOCAL}:{port}/ws")
            alice, saw = await joined(address, "alice")
            endings: list[Ending] = []
            ended = trio.Event()

            async def run() -> None:
                endings.append(await alice.run())
                ended.set()

            nursery.start_soon(run)
            alice.say_nowait("before")
            await alice.wait_acknowledged()

            first_scope.cancel()  # no shutdown notice, no close frame: the connection ends
            await saw.wait_for(lambda e: isinstance(e, Lost))
            alice.say_nowait("during")
            second = ChatServer(PASSWORD, limits=RELAXED)
            await nursery.start(second.serve, port, LOCAL)
            bob = await Peer.join(port, "bob")
            rejoined = await saw.wait_for(lambda e: isinstance(e, Joined))
            assert isinstance(rejoined, Joined) and rejoined.rejoined
            await alice.wait_acknowledged()
            heard = await bob.expect(Message)
            assert isinstance(heard, Message) and heard.text == "during"
            second.shutdown_nowait("test over")
            await bob.aclose()
            await ended.wait()
            assert endings == [Ending("shutdown", "test over")]
            nursery.cancel_scope.cancel()


async def _serve_until_cancelled(
    server: ChatServer,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await server.serve(0, LOCAL, task_status=task_status)


async def _run_forwarder(
    port: int, cert: trustme.LeafCert, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async with tls_forwarder(port, cert) as edge:
        task_status.started(edge)
        await trio.sleep_forever()


# -- what answers instead of a room --


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
async def test_ngrok_endpoint_offline_means_the_room_is_closed(length: bool) -> None:
    response = http_response("404 Not Found", NGROK_OFFLINE_PAGE, length=length)
    with trio.fail_after(10):
        async with http_server(response) as (port, heads):
            with pytest.raises(ConnectFailed) as info:
                await login(parse_address(f"http://{LOCAL}:{port}"), "alice", PASSWORD)
    assert str(info.value).startswith(f"the room at http://{LOCAL}:{port} is closed")
    # The upgrade skips ngrok's browser warning, and claims no web page as its origin.
    head = heads[0].lower()
    assert head.startswith(b"get /ws http/1.1\r\n")
    assert b"\r\nngrok-skip-browser-warning: 1\r\n" in head
    assert f"\r\nhost: {LOCAL}:{port}\r\n".encode() in head
    assert b"\r\norigin:" not in head


async def test_ngrok_error_code_header_is_enough() -> None:
    response = (
        b"HTTP/1.1 404 Not Found\r\nngrok-error-code: ERR_NGROK_3200\r\ncontent-length: 0\r\n\r\n"
    )
    with trio.fail_after(10):
        async with http_server(response) as (port, _):
            with pytest.raises(ConnectFailed, match="is closed"):
                await login(parse_address(f"http://{LOCAL}:{port}"), "alice", PASSWORD)


async def test_ngrok_upstream_down_means_the_room_is_not_answering() -> None:
    response = http_response("502 Bad Gateway", NGROK_UPSTREAM_PAGE)
    with trio.fail_after(10):
        async with http_server(response) as (port, _):
            with pytest.raises(ConnectFailed) as info:
                await login(parse_address(f"http://{LOCAL}:{port}"), "alice", PASSWORD)
    assert str(info.value) == (
        f"the room's server behind http://{LOCAL}:{port} is not answering: the tunnel is up, "
        "but the room behind it is not running"
    )


@pytest.mark.parametrize(
    ("response", "says"),
    [
        (http_response("404 Not Found", b"<h1>Not Found</h1>"), "answered HTTP 404: "),
        (http_response("200 OK", b"<html>a blog</html>"), "answered HTTP 200: "),
        (
            b"HTTP/1.1 301 Moved\r\nlocation: https://example.test/\r\ncontent-length: 0\r\n\r\n",
            "answered HTTP 301, which points to https://example.test/: ",
        ),
    ],
)
async def test_a_web_server_is_not_a_room(response: bytes, says: str) -> None:
    with trio.fail_after(10):
        async with http_server(response) as (port, _):
            with pytest.raises(NotMultichat) as info:
                await login(parse_address(f"http://{LOCAL}:{port}"), "alice", PASSWORD)
    assert str(info.value) == f"http://{LOCAL}:{port} {says}not a multichat room"


async def test_something_that_is_not_http_is_not_a_room() -> None:
    with trio.fail_after(10):
        async with http_server(b"SSH-2.0-OpenSSH_9.6\r\n") as (port, _):
            with pytest.raises(NotMultichat, match="is not a multichat server"):
                await login(parse_address(f"http://{LOCAL}:{port}"), "alice", PASSWORD)


async def test_closed_before_answering_the_upgrade() -> None:
    with trio.fail_after(10):
        async with http_server(b"") as (port, _):
            with pytest.raises(ConnectFailed, match="closed the connection while logging in"):
                await login(parse_address(f"http://{LOCAL}:{port}"), "alice", PASSWORD)


# -- the stream adapter, against scripted WebSocket servers --


async def test_lines_are_messages_both_ways() -> None:
    got: list[ws.Event | None] = []

    async def script(server: ScriptedServer) -> None:
        request = await server.accept()
        assert (request.target, request.host) == ("/ws", f"{LOCAL}:{port}")
        for _ in range(2):
            got.append(await server.message())
        # A message in two frames, with a line break between JSON tokens, and one in one frame.
        await server.send(ws.TextMessage('{"type":"pong",', message_finished=False))
        await server.send(ws.TextMessage('\n"data":"é"}'))
        await server.send(ws.TextMessage('{"type":"pong"}'))
        got.append(await server.message())

    with trio.fail_after(10):
        async with scripted(script) as port:
            stream = await open_scripted(port)
            await stream.send_all(b'{"type":"who"}\n{"type":"ping"')
            await stream.send_all(b',"data":"x"}\n')
            received = b""
            while received.count(b"\n") < 2:
                received += await stream.receive_some(5)  # smaller than a message
            assert received == '{"type":"pong", "data":"é"}\n{"type":"pong"}\n'.encode()
            await stream.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some()
    texts = [e.data for e in got[:2] if isinstance(e, ws.Message)]
    assert texts == ['{"type":"who"}', '{"type":"ping","data":"x"}']
    # Closing says goodbye with a normal close frame.
    assert isinstance(got[2], ws.CloseConnection) and got[2].code == 1000


async def test_ping_is_answered_and_close_is_the_end() -> None:
    got: list[ws.Event | None] = []

    async def script(server: ScriptedServer) -> None:
        await server.accept()
        await server.send(ws.Ping(b"are you there"))
        got.append(await server.next())
        await server.send(ws.TextMessage('{"type":"shutdown","reason":"bye"}'))
        await server.send(ws.CloseConnection(code=1000))
        got.append(await server.next())

    with trio.fail_after(10):
        async with scripted(script) as port:
            stream = await open_scripted(port)
            assert await stream.receive_some() == b'{"type":"shutdown","reason":"bye"}\n'
            assert await stream.receive_some() == b""
            assert await stream.receive_some() == b""
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(b'{"type":"who"}\n')
            await stream.aclose()
    assert isinstance(got[0], ws.Pong) and got[0].payload == b"are you there"
    assert isinstance(got[1], ws.CloseConnection) and got[1].code == 1000


async def test_binary_message_is_refused() -> None:
    got: list[ws.Event | None] = []

    async def script(server: ScriptedServer) -> None:
        await server.accept()
        await server.send(ws.TextMessage('{"type":"pong"}'))
        await server.send(ws.BytesMessage(b"\x00\x01"))
        got.append(await server.next())

    with trio.fail_after(10):
        async with scripted(script) as port:
            stream = await open_scripted(port)
            assert await stream.receive_some() == b'{"type":"pong"}\n'
            with pytest.raises(WebSocketError, match="binary message"):
                await stream.receive_some()
            await stream.aclose()
    assert isinstance(got[0], ws.CloseConnection) and got[0].code == 1003


async def test_binary_message_at_login_is_not_multichat() -> None:
    async def script(server: ScriptedServer) -> None:
        await server.accept()
        await server.message()  # the hello
        await server.send(ws.BytesMessage(b"welcome"))
        await server.next()

    with trio.fail_after(10):
        async with scripted(script) as port:
            with pytest.raises(NotMultichat, match="is not a multichat server"):
                await login(parse_address(f"ws://{LOCAL}:{port}"), "alice", PASSWORD)


# -- the real CLI --


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTICHAT_")}
    env.pop("SSL_CERT_FILE", None)
    env.update(PYTHONIOENCODING="utf-8", MULTICHAT_PASSWORD=PASSWORD, **extra)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "multichat", "connect", *args]


async def test_cli_connects_over_http_and_chats_with_a_tcp_member() -> None:
    with trio.fail_after(PROCESS_SECONDS):
        async with start_room() as room:
            bob = await room.join("bob")
            address = f"http://{LOCAL}:{room.port}"
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        command(address, "--name", "alice", "--plain"),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        env=environment(),
                        check=False,
                    )
                )
                out = b""
                while b"Welcome" not in out:
                    data = await process.stdout.receive_some(65536)
                    assert data, f"ended before the welcome: {out!r}"
                    out += data
                await process.stdin.send_all(b"hello from a WebSocket\n")
                heard = await bob.expect(Message)
                assert isinstance(heard, Message) and heard.text == "hello from a WebSocket"
                await bob.say("hello from TCP")
                while b"bob: hello from TCP" not in out:
                    data = await process.stdout.receive_some(65536)
                    assert data, f"ended before bob's line: {out!r}"
                    out += data
                await process.stdin.aclose()  # end of input: wait for the echoes, then leave
                while data := await process.stdout.receive_some(65536):
                    out += data
                errors = b""
                while data := await process.stderr.receive_some(65536):
                    errors += data
            assert process.returncode == 0, errors
            assert errors == b""
            assert b"* Welcome to multichat, alice! Online (2): bob, alice" in out
            await bob.aclose()


async def test_cli_untrusted_certificate_exits_1_with_one_line(ca: trustme.CA) -> None:
    with trio.fail_after(PROCESS_SECONDS):
        async with start_room() as room, tls_forwarder(room.port, ca.issue_cert(LOCAL)) as edge:
            result = await trio.run_process(
                command(f"https://{LOCAL}:{edge}", "--name", "alice", "--plain"),
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=environment(),
            )
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"multichat: the certificate of {LOCAL} is not trusted (")
    assert "SSL_CERT_FILE" in lines[0]
