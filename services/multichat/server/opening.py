"""A connection until it is a member: what its first bytes are, then its login, in time.

One port serves everything, so the first bytes decide (docs/protocol.md): a TLS ClientHello
starts TLS, under which the same choice is made again; a PROXY header is refused here (only
the tunnel's own listener may name another source); an HTTP request goes to web.py, which
answers it or upgrades it to a WebSocket; anything else is the chat protocol itself, whose
state machine tells JSON from plain text (nothing for `text_pause_seconds` is a person
waiting for the password prompt). Then the frames of the login go to the session, all within
`handshake_seconds` (the session's scope has that deadline), which plain text restarts at each
prompt: a person is typing.

The session calls these with itself, as it does login.py's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..protocol import http
from ..protocol.errors import RemoteProtocolError
from ..protocol.events import ConnectionClosed, NeedData
from ..protocol.proxy import looks_like_proxy_header
from ..protocol.state import Mode, State
from . import web
from .tls import TlsLayer, looks_like_tls

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("multichat.server")


async def handshake(session: Session, scope: trio.CancelScope) -> bool:
    """Log in (or answer a control command); True once joined. `scope`, which the caller runs
    this in, has the handshake's deadline: each plain-text prompt restarts it."""
    conn = session.conn
    while conn.state is not State.JOINED:
        event = session.next_event()
        if event is None:
            continue
        if isinstance(event, NeedData):
            if not await receive(session):
                return False
            continue
        if isinstance(event, ConnectionClosed) or not await session.handle(event):
            return False
        if conn.state is State.GREETING and conn.mode is Mode.TEXT:
            # A person is typing. Bytes alone do not restart it, or a line sent a byte at a
            # time would never end.
            scope.deadline = trio.current_time() + session.ctx.limits.handshake_seconds
    return True


async def receive(session: Session) -> bool:
    """Read more and feed it to the protocol; False once the connection had its answer."""
    conn = session.conn
    transport = session.transport
    data: bytes | None
    if session.initial:
        data, session.initial = session.initial, b""
    elif conn.mode is Mode.UNKNOWN or (conn.mode is Mode.TEXT and conn.has_partial_line()):
        # A pause means something here, so a wait has one; what has come already (a client's
        # hello, sent as it connects) needs none.
        data = transport.receive_nowait()
        if data is None:
            with trio.move_on_after(session.ctx.limits.text_pause_seconds):
                data = await transport.receive_some()
            if data is None:  # the pause came first
                conn.receive_pause()
                session.delivery.send_nowait(conn.data_to_send())
                return True
        else:
            await trio.lowlevel.checkpoint()
    else:
        data = await transport.receive_some()
    session.heard = trio.current_time()
    if conn.mode is Mode.UNKNOWN and session.websocket is None and data:
        if transport.tls is None and looks_like_tls(data):
            return await _start_tls(session, bytes(data))
        if session.refuse_proxy and looks_like_proxy_header(bytes(data[:16])):
            raise RemoteProtocolError(
                "PROXY headers are accepted only from the tunnel, not on this port",
                "bad_proxy_header",
            )
        if http.looks_like_http(bytes(data[:8])) is not False:
            return await _answer_http(session, bytes(data))
    if session.websocket is None:
        conn.receive_data(data)
    else:
        session.feed_websocket(data)
    return True


async def _start_tls(session: Session, data: bytes) -> bool:
    """The client opened with a TLS ClientHello: encrypt from here on, then read on."""
    if session.ctx.tls is None:
        log.info("closed a TLS connection from %s: this room has no certificate", session.source)
        return False
    await session.transport.start_tls(TlsLayer(session.ctx.tls, data))
    return True


async def _answer_http(session: Session, data: bytes) -> bool:
    """Answer an HTTP request, or take its WebSocket upgrade: True if it became one."""
    session.spoke_http = True
    request, whole = await web.read_request(session.transport, data)
    session.websocket = web.answer(request, whole, session.delivery.send_nowait)
    if session.websocket is None:
        return False
    session.conn.start_json()
    session.feed_websocket(b"")  # frames that came along with the upgrade request
    return True
