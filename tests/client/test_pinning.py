"""`multichat connect multichat://...`: TLS pinned to the invite's fingerprint, checked before
anything is sent; personal invites that log in without the password. Real TLS over loopback,
the real `ChatServer`, and the real CLI in subprocesses and in a pseudo-terminal."""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
import trio
import trio.testing
import trustme

from chatpeer import PASSWORD, RELAXED, Peer
from multichat.client.address import parse_address
from multichat.client.login import (
    ConnectFailed,
    IdentityChanged,
    LoginRefused,
    login,
    pinning_context,
)
from multichat.hosting.certificate import RoomCertificate, kept_in
from multichat.hosting.invite_links import link, pinned
from multichat.protocol.connection import ClientConnection
from multichat.protocol.events import Message, Say
from multichat.server.listeners import ChatServer
from multichat.server.tls import server_context

STEP = 15  # seconds for any one step; a subprocess start is about one on a busy machine
MULTICHAT = Path(sys.executable).parent / "multichat"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> RoomCertificate:
    return kept_in(tmp_path_factory.mktemp("room"))


@pytest.fixture(scope="module")
def other_certificate(tmp_path_factory: pytest.TempPathFactory) -> RoomCertificate:
    return kept_in(tmp_path_factory.mktemp("impostor"))


@dataclass
class Room:
    server: ChatServer
    port: int
    fingerprint: str

    def invite(self, token: str | None = None, fingerprint: str | None = None) -> str:
        return pinned("127.0.0.1", self.port, "den", fingerprint or self.fingerprint, token)


@asynccontextmanager
async def tls_room(certificate: RoomCertificate) -> AsyncIterator[Room]:
    server = ChatServer(PASSWORD, room="den", limits=RELAXED, tls=certificate.context)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        yield Room(server, port, certificate.fingerprint)
        server.shutdown_nowait("test over")


@dataclass
class Recorder:
    """A TLS listener with the room's certificate that records every byte sent after the
    handshake: what a room at the wrong address would have heard."""

    port: int
    handshakes: int = 0
    heard: bytes = b""
    done: trio.Event | None = None


@asynccontextmanager
async def recorder(certificate: RoomCertificate) -> AsyncIterator[Recorder]:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    record = Recorder(listener.socket.getsockname()[1], done=trio.Event())

    async def serve_one() -> None:
        tcp = await listener.accept()
        tls = trio.SSLStream(tcp, certificate.context, server_side=True)
        try:
            await tls.do_handshake()
            record.handshakes += 1
            while data := await tls.receive_some(65536):
                record.heard += data
        except trio.BrokenResourceError:
            pass  # the client cut it off: as expected, after its check
        finally:
            await trio.aclose_forcefully(tls)
            assert record.done is not None
            record.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        yield record
        nursery.cancel_scope.cancel()
    await listener.aclose()


async def say(stream: trio.abc.Stream, conn: ClientConnection, text: str) -> None:
    await stream.send_all(conn.send(Say(text)))


async def heard(peer: Peer, text: str) -> Message:
    while True:
        message = await peer.expect(Message)
        assert isinstance(message, Message)
        if message.text == text:
            return message


async def test_the_right_pin_joins_and_chats_with_everyone(certificate: RoomCertificate) -> None:
    async with tls_room(certificate) as room:
        with trio.fail_after(STEP):
            plain = await Peer.join(room.port, "plain")
            address = parse_address(room.invite())
            stream, conn, welcome = await login(address, "pinned", PASSWORD)
            assert isinstance(stream, trio.SSLStream), "TLS, not plain TCP"
            assert welcome.name == "pinned" and welcome.room == "den"
            await say(stream, conn, "hello over pinned TLS")
            message = await heard(plain, "hello over pinned TLS")
            assert message.sender == "pinned"
            await stream.aclose()
            await plain.aclose()


async def test_a_wrong_pin_refuses_before_sending_anything(
    certificate: RoomCertificate, other_certificate: RoomCertificate
) -> None:
    # The invite pins the room's certificate; what answers has another one.
    async with recorder(other_certificate) as record:
        address = parse_address(pinned("127.0.0.1", record.port, "den", certificate.fingerprint))
        with trio.fail_after(STEP):
            with pytest.raises(IdentityChanged) as caught:
                await login(address, "ann", "the password")
            assert record.done is not None
            await record.done.wait()
    assert record.handshakes == 1, "the TLS handshake happened, so the check was the pin's"
    assert record.heard == b"", "not a byte after the handshake: no hello, no password"
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the room's identity changed: ")
    assert other_certificate.fingerprint in message, "what was seen, for the host to compare"
    assert "different room" in message and "someone in between" in message
    assert isinstance(caught.value, ConnectFailed), "exit 1, like any failure to connect"


async def test_a_wrong_pin_at_a_real_room_reaches_no_login(
    certificate: RoomCertificate,
    other_certificate: RoomCertificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="multichat.server")
    async with tls_room(certificate) as room:
        with trio.fail_after(STEP):
            wrong = parse_address(room.invite(fingerprint=other_certificate.fingerprint))
            with pytest.raises(IdentityChanged):
                await login(wrong, "ann", PASSWORD)
            stream, _, welcome = await login(parse_address(room.invite()), "ann", PASSWORD)
            assert welcome.name == "ann"
            await stream.aclose()
    # Had the first hello been sent (with the right password), ann would have joined twice.
    joins = [r.getMessage() for r in caplog.records if "joined from" in r.getMessage()]
    assert len(joins) == 1 and joins[0].startswith("ann joined"), joins


async def test_an_invite_to_a_room_without_tls_is_one_line() -> None:
    server = ChatServer(PASSWORD, limits=RELAXED)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        with trio.fail_after(STEP), pytest.raises(ConnectFailed) as caught:
            await login(parse_address(pinned("127.0.0.1", port, "den", "0" * 64)), "a", "b")
        server.shutdown_nowait("test over")
    assert "did not complete TLS" in str(caught.value)
    assert f"127.0.0.1:{port}" in str(caught.value) and "\n" not in str(caught.value)


async def test_a_personal_invite_logs_in_without_the_password_for_its_name_only(
    certificate: RoomCertificate,
) -> None:
    async with tls_room(certificate) as room:
        _, token = room.server.ctx.invites.issue("bob", uses=1, seconds=60)
        address = parse_address(room.invite(token))
        with trio.fail_after(STEP):
            with pytest.raises(LoginRefused) as refused:
                await login(address, "carol", "")
            assert refused.value.code == "bad_invite" and "bob" in str(refused.value)
            with pytest.raises(LoginRefused) as taken:
                await login(parse_address(room.invite()), "bob", PASSWORD)
            assert taken.value.code != "bad_invite", "the name is kept for the invite"
            stream, _, welcome = await login(address, "bob", "")
            assert welcome.name == "bob"
            await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
            # A dropped connection: bob comes back with the same token, no use spent.
            stream, _, again = await login(address, "bob", "")
            assert again.name == "bob"
            await stream.aclose()
            with pytest.raises(LoginRefused) as used:
                await login(address, "carol", "")
            assert used.value.code == "bad_invite"


async def test_a_personal_invite_on_the_https_link_joins_over_a_websocket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    cert_file, key_file, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # as a CA-signed tunnel's link is trusted
    server = ChatServer(PASSWORD, limits=RELAXED, tls=server_context(str(cert_file), str(key_file)))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        _, token = server.ctx.invites.issue(uses=1, seconds=60)
        address = parse_address(link(f"https://localhost:{port}", token))
        assert address.transport == "wss" and address.invite == token
        with trio.fail_after(STEP):
            stream, _, welcome = await login(address, "tab", "")
            assert welcome.name == "tab"
            await stream.aclose()
        server.shutdown_nowait("test over")


# ---------------------------------------------------------------- the real `multichat connect`


def connect_env(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MULTICHAT_")}
    env.update(HOME=str(tmp_path), NO_PROXY="127.0.0.1,localhost", TERM="xterm")
    return env


async def run_connect(tmp_path: Path, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    with trio.fail_after(STEP):
        done = await trio.run_process(
            [str(MULTICHAT), "connect", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            env=connect_env(tmp_path),
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_connect_with_a_pasted_invite_needs_no_password(
    certificate: RoomCertificate, tmp_path: Path
) -> None:
    async with tls_room(certificate) as room:
        _, token = room.server.ctx.invites.issue("bob", uses=1, seconds=60)
        with trio.fail_after(STEP):
            plain = await Peer.join(room.port, "plain")
        code, out, err = await run_connect(
            tmp_path, room.invite(token), "--name", "bob", stdin=b"hi from an invite\n"
        )
        assert (code, err) == (0, ""), err
        assert "* Welcome to den, bob!" in out
        with trio.fail_after(STEP):
            message = await heard(plain, "hi from an invite")
        assert message.sender == "bob"
        await plain.aclose()


async def test_connect_with_the_wrong_pin_exits_1_in_one_line_and_sends_nothing(
    certificate: RoomCertificate, other_certificate: RoomCertificate, tmp_path: Path
) -> None:
    async with recorder(other_certificate) as record:
        invite = pinned("127.0.0.1", record.port, "den", certificate.fingerprint)
        code, out, err = await run_connect(
            tmp_path, invite, "--name", "ann", "--password", "secret", stdin=b"hello\n"
        )
        assert record.done is not None
        with trio.fail_after(STEP):
            await record.done.wait()
    assert code == 1 and out == ""
    assert err.startswith("multichat: the room's identity changed: ") and err.count("\n") == 1
    assert record.heard == b""


async def test_connect_with_a_bad_invite_is_refused_with_exit_3(
    certificate: RoomCertificate, tmp_path: Path
) -> None:
    async with tls_room(certificate) as room:
        code, _, err = await run_connect(
            tmp_path, room.invite("NotARealToken"), "--name", "bob", stdin=b"hi\n"
        )
    assert code == 3
    assert "that invite is not valid" in err and err.count("\n") == 1


@pytest.mark.skipif(sys.platform == "win32", reason="pexpect needs a POSIX pty")
async def test_on_a_terminal_an_invite_asks_the_name_but_not_the_password(
    certificate: RoomCertificate, tmp_path: Path
) -> None:
    async with tls_room(certificate) as room:
        _, token = room.server.ctx.invites.issue(uses=1, seconds=60)

        def on_a_terminal() -> int | None:
            child = pexpect.spawn(
                str(MULTICHAT),
                ["connect", "--plain", room.invite(token)],
                env=connect_env(tmp_path),
                timeout=STEP,
                encoding="utf-8",
            )
            try:
                asked = child.expect(["Room password: ", "Your name: "])
                assert asked == 1, f"asked for the password: {child.before!r}"
                child.sendline("dora")
                child.expect("Welcome to den, dora!")
                child.sendeof()  # leaves the room
                child.expect(pexpect.EOF)
            finally:
                child.close(force=True)
            return child.exitstatus

        assert await trio.to_thread.run_sync(on_a_terminal) == 0


def test_connect_refuses_a_mistyped_invite_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(MULTICHAT), "connect", "multichat://127.0.0.1:5002/?room=den&fp=abc"],
        capture_output=True,
        text=True,
        env=connect_env(tmp_path),
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 2
    assert "64 hex digits" in done.stderr and done.stderr.count("\n") == 1


def test_the_pinning_context_leans_on_the_pin_alone() -> None:
    """No CA and no name are checked (the certificate is self-signed, the address anything):
    only the pin protects the connection, which is why `login` compares before it sends."""
    context = pinning_context()
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
