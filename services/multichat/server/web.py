"""The room's port as a web server: the browser client's files, and the way into a WebSocket.

A connection whose first bytes are an HTTP request lands here (opening.py decides). A request
for the page or one of its files is answered and the connection closes; `GET /ws` with a
WebSocket upgrade becomes a member connection speaking multichat/1 in WebSocket messages, under
the same session, state machine and limits as over TCP. The files are the package's
`client/web/` directory, read once and kept in memory (a few KiB).
"""

from __future__ import annotations

import functools
import logging
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from ..protocol.errors import RemoteProtocolError
from ..protocol.events import NeedData
from ..protocol.http import WEBSOCKET_PATH, WEBSOCKET_VERSION, HttpConnection, file_name
from ..protocol.websocket import WebSocketConnection
from .transport import Transport

log = logging.getLogger("multichat.server")

# The page's files, shipped in the package beside the terminal client.
PAGE_PACKAGE = "multichat"
PAGE_DIRECTORY = ("client", "web")
# Types for the files a page has; anything else is served as bytes to download.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}


@dataclass(frozen=True, slots=True)
class PageFile:
    body: bytes
    content_type: str


@functools.cache
def page_files() -> dict[str, PageFile]:
    """The browser client's files by name; empty if the package was installed without them."""
    directory = resources.files(PAGE_PACKAGE).joinpath(*PAGE_DIRECTORY)
    files: dict[str, PageFile] = {}
    if not directory.is_dir():
        return files
    for entry in directory.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            suffix = "." + entry.name.rpartition(".")[2]
            kind = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
            files[entry.name] = PageFile(entry.read_bytes(), kind or "application/octet-stream")
    return files


async def read_request(transport: Transport, data: bytes) -> tuple[HttpConnection, bool]:
    """Read the request head that `data` begins; the connection and whether it is whole.

    Raises BrokenResourceError; the caller's handshake deadline bounds the wait.
    """
    conn = HttpConnection()
    conn.receive_data(data)
    try:
        while isinstance(conn.next_request(), NeedData):
            conn.receive_data(await transport.receive_some())
    except RemoteProtocolError as exc:
        log.debug("bad HTTP request: %s", exc)
        return conn, False
    return conn, True


def answer(
    conn: HttpConnection, whole: bool, send: Callable[[bytes], None]
) -> WebSocketConnection | None:
    """Answer the request on `conn` with `send`; a WebSocket if it was upgraded, else None."""
    if not whole:
        send(conn.respond(400, b"Bad request.\n"))
        return None
    request = conn.next_request()
    assert not isinstance(request, NeedData)
    if request.path == WEBSOCKET_PATH:
        return _upgrade(conn, send)
    if request.method not in ("GET", "HEAD"):
        send(conn.respond(405, b"Only GET here.\n", headers=[("Allow", "GET, HEAD")]))
        return None
    name = file_name(request.path)
    page = page_files().get(name) if name is not None else None
    if page is None:
        send(conn.respond(404, b"Not found. The room is at /\n"))
    else:
        send(conn.respond(200, page.body, page.content_type))
    return None


def _upgrade(conn: HttpConnection, send: Callable[[bytes], None]) -> WebSocketConnection | None:
    request = conn.next_request()
    assert not isinstance(request, NeedData)
    if not request.wants_websocket():
        send(
            conn.respond(
                426,
                b"This is the room's WebSocket: connect with a WebSocket client.\n",
                headers=[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            )
        )
        return None
    if not request.same_origin():
        # Another web page must not open a socket into the room with its visitor's browser.
        log.warning("refused a WebSocket from the page at %s", request.headers.get("origin"))
        send(conn.respond(403, b"WebSockets into this room are for its own page only.\n"))
        return None
    if not conn.websocket_version_ok():
        version = WEBSOCKET_VERSION.decode()
        send(
            conn.respond(
                426, b"WebSocket version 13 only.\n", headers=[("Sec-WebSocket-Version", version)]
            )
        )
        return None
    try:
        send(conn.accept_websocket())
    except RemoteProtocolError:
        send(conn.respond(400, b"Bad WebSocket handshake.\n"))
        return None
    return WebSocketConnection(conn.trailing_data)
