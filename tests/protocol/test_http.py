"""HTTP/1.1 on the room's port as bytes: requests parse whole or byte by byte, answers frame."""

from __future__ import annotations

import contextlib
import itertools

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multichat.protocol.errors import RemoteProtocolError
from multichat.protocol.events import NeedData
from multichat.protocol.http import (
    CONTENT_SECURITY_POLICY,
    MAX_REQUEST_HEAD,
    HttpConnection,
    Request,
    file_name,
    looks_like_http,
    refusal,
)

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: room.example:5002\r\nUpgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nOrigin: http://room.example:5002\r\n"
    b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 203.0.113.5\r\n\r\n"
)


def parse(data: bytes, chunks: list[int] | None = None) -> tuple[HttpConnection, Request]:
    conn = HttpConnection()
    pieces = [data] if chunks is None else _split(data, chunks)
    result: Request | NeedData = NeedData()
    for piece in pieces:
        conn.receive_data(piece)
        result = conn.next_request()
    assert isinstance(result, Request)
    return conn, result


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [data]


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"GET / HTTP/1.1", True),
        (b"HEAD /", True),
        (b"OPTIONS *", True),
        (b"GE", None),
        (b"P", None),
        (b"", None),
        (b'{"type":"hello"}', False),
        (b"correct horse\n", False),
        (b"GETAWAY\n", False),
        (b"PROXY TCP4 ", False),
        (b"\r\n\r\n\x00\r\nQUIT\n", False),
    ],
)
def test_the_first_bytes_tell_http_from_the_other_dialects(
    data: bytes, verdict: bool | None
) -> None:
    assert looks_like_http(data) is verdict


def test_an_upgrade_request_parses_with_what_the_server_needs() -> None:
    conn, request = parse(UPGRADE + b"\x81\x80")
    assert request.method == "GET" and request.path == "/ws"
    assert request.wants_websocket() and request.same_origin()
    assert request.forwarded_for() == "203.0.113.5", "the last X-Forwarded-For, from the tunnel"
    answer = conn.accept_websocket()
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert conn.trailing_data == b"\x81\x80", "a first frame sent with the request is kept"


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(UPGRADE)), max_size=12))
def test_any_chunking_gives_the_same_request(cuts: list[int]) -> None:
    assert parse(UPGRADE, cuts)[1] == parse(UPGRADE)[1]


@pytest.mark.parametrize(
    ("origin", "same"),
    [
        (None, True),  # no browser: a terminal client sends none
        ("http://room.example:5002", True),
        ("https://ROOM.example:5002", True),
        ("https://evil.example", False),
        ("http://room.example:5003", False),
        ("null", False),
        ("", False),
    ],
)
def test_origin_must_be_the_page_own(origin: str | None, same: bool) -> None:
    headers = {"host": "room.example:5002"}
    if origin is not None:
        headers["origin"] = origin
    assert Request("GET", "/ws", headers).same_origin() is same


@pytest.mark.parametrize("value", ["", "not-an-ip", "203.0.113.5, junk", "1.2.3.4:80"])
def test_an_unusable_forwarded_for_names_nobody(value: str) -> None:
    assert Request("GET", "/", {"x-forwarded-for": value}).forwarded_for() is None


def test_answers_close_the_connection_and_carry_the_policy() -> None:
    conn, _ = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = conn.respond(200, b"<html>", "text/html; charset=utf-8")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"<html>"
    assert b"Connection: close" in head and b"Content-Length: 6" in head
    assert f"Content-Security-Policy: {CONTENT_SECURITY_POLICY}".encode() in head


def test_head_answers_have_no_body() -> None:
    conn, _ = parse(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = conn.respond(200, b"<html>")
    assert data.endswith(b"\r\n\r\n") and b"Content-Length: 6" in data


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"b" * MAX_REQUEST_HEAD + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
)
def test_a_bad_request_raises_remote_protocol_error_only(data: bytes) -> None:
    conn = HttpConnection()
    conn.receive_data(data)
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_request()
    assert info.value.code == "bad_request"
    assert conn.respond(400, b"no").startswith(b"HTTP/1.1 400 Bad Request\r\n")


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_raises_only_remote_protocol_error(data: bytes) -> None:
    conn = HttpConnection()
    conn.receive_data(b"GET " + data)
    conn.receive_data(b"")
    with contextlib.suppress(RemoteProtocolError):
        conn.next_request()


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/", "index.html"),
        ("/app.js", "app.js"),
        ("/style.css", "style.css"),
        ("/../pyproject.toml", None),
        ("/a/b.js", None),
        ("/.hidden", None),
        ("/" + "a" * 100, None),
        ("/..", None),
    ],
)
def test_only_plain_file_names_name_a_page_file(path: str, name: str | None) -> None:
    assert file_name(path) == name


def test_a_refusal_is_a_whole_http_answer_that_closes() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/app.js", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(refusal(429, "too many connections from your address (at most 8)"))
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 429
    assert (b"connection", b"close") in response.headers
    body = client.next_event()
    assert isinstance(body, h11.Data)
    assert body.data == b"too many connections from your address (at most 8)\n"
    assert isinstance(client.next_event(), h11.EndOfMessage)
