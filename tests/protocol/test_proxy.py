"""PROXY protocol headers: each round-trips, any chunking gives the same header, junk is refused."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multichat.protocol.errors import LocalProtocolError, RemoteProtocolError
from multichat.protocol.events import NEED_DATA
from multichat.protocol.proxy import (
    MAX_V1_HEADER,
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    Command,
    Family,
    ProxyHeader,
    ProxyHeaderParser,
    build_v1,
    build_v2,
    looks_like_proxy_header,
)

FAST = settings(max_examples=200, deadline=None)
LONG = settings(max_examples=10_000, deadline=None)

APP = b'{"type":"hello"}\n'


def parse(data: bytes) -> tuple[ProxyHeader, bytes]:
    parser = ProxyHeaderParser()
    parser.receive_data(data)
    header = parser.next_header()
    assert isinstance(header, ProxyHeader)
    return header, parser.trailing


def refused(data: bytes, *, close: bool = True) -> str:
    parser = ProxyHeaderParser()
    with pytest.raises(RemoteProtocolError) as info:
        parser.receive_data(data)
        parser.next_header()
        if close:
            parser.receive_data(b"")
        parser.next_header()
    assert info.value.code == "bad_proxy_header"
    return str(info.value)


def v2(command: int, family: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return V2_SIGNATURE + bytes([command, family]) + size.to_bytes(2, "big") + payload


INET_BLOCK = bytes([192, 0, 2, 1, 198, 51, 100, 7]) + (40000).to_bytes(2, "big") + b"\x1f\x90"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 8080\r\n",
            ProxyHeader(
                1, Command.PROXY, Family.INET, ("192.0.2.1", 40000), ("198.51.100.7", 8080)
            ),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:0db8:0:0::2 0 65535\r\n",
            ProxyHeader(1, Command.PROXY, Family.INET6, ("2001:db8::1", 0), ("2001:db8::2", 65535)),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(1, Command.PROXY, Family.UNSPEC, None, None)),
        (
            b"PROXY UNKNOWN whatever the sender had 1 2\r\n",
            ProxyHeader(1, Command.PROXY, Family.UNSPEC, None, None),
        ),
        (
            v2(0x21, 0x11, INET_BLOCK),
            ProxyHeader(
                2, Command.PROXY, Family.INET, ("192.0.2.1", 40000), ("198.51.100.7", 8080)
            ),
        ),
        (
            v2(0x21, 0x11, INET_BLOCK + b"\x04\x00\x02hi\x05\x00\x00"),
            ProxyHeader(
                2,
                Command.PROXY,
                Family.INET,
                ("192.0.2.1", 40000),
                ("198.51.100.7", 8080),
                ((0x04, b"hi"), (0x05, b"")),
            ),
        ),
        (
            v2(0x21, 0x21, bytes(15) + b"\x01" + bytes(15) + b"\x02" + b"\x00\x01\x00\x02"),
            ProxyHeader(2, Command.PROXY, Family.INET6, ("::1", 1), ("::2", 2)),
        ),
        # LOCAL: the tunnel's health check. Its block, family and all, is discarded.
        (v2(0x20, 0x00, b""), ProxyHeader(2, Command.LOCAL, Family.UNSPEC, None, None)),
        (v2(0x20, 0x77, b"junk"), ProxyHeader(2, Command.LOCAL, Family.UNSPEC, None, None)),
        (v2(0x21, 0x00, b""), ProxyHeader(2, Command.PROXY, Family.UNSPEC, None, None)),
        (v2(0x21, 0x31, bytes(216)), ProxyHeader(2, Command.PROXY, Family.UNIX, None, None)),
    ],
)
def test_parse(data: bytes, expected: ProxyHeader) -> None:
    assert parse(data) == (expected, b"")
    assert parse(data + APP) == (expected, APP)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "does not start with a PROXY header"),
        (b"PROXZ TCP4", "signature"),
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "does not start"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "printable"),  # LF without CR
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "printable"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n", "printable"),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 \u0662\r\n".encode(), "printable"),
        (b"PROXY " + b"x" * 120, "no CRLF within 107"),
        (b"PROXY UNKNOWN " + b"x" * (MAX_V1_HEADER - 15) + b"\r\n", "no CRLF within 107"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY \r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "two addresses and two ports"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "two addresses and two ports"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "two addresses and two ports"),
        (b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", "bad INET address"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad INET address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad INET address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad INET6 address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad INET6 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4", "closed inside"),
        (V2_SIGNATURE[:5] + b"X", "bad PROXY v2 signature"),
        (V2_SIGNATURE[:8], "closed inside"),
        (v2(0x11, 0x11, INET_BLOCK), "version 1"),
        (v2(0x31, 0x11, INET_BLOCK), "version 3"),
        (v2(0x22, 0x11, INET_BLOCK), "command 0x2"),
        (v2(0x2F, 0x11, INET_BLOCK), "command 0xf"),
        (v2(0x21, 0x10, INET_BLOCK), "address family 0x10"),
        (v2(0x21, 0x13, INET_BLOCK), "address family 0x13"),
        (v2(0x21, 0x41, INET_BLOCK), "address family 0x41"),
        (v2(0x21, 0x01, INET_BLOCK), "address family 0x01"),
        (v2(0x21, 0x12, INET_BLOCK), "datagram"),
        (v2(0x21, 0x11, INET_BLOCK[:11]), "too short for INET"),
        (v2(0x21, 0x21, INET_BLOCK), "too short for INET6"),
        (v2(0x21, 0x31, bytes(100)), "too short for UNIX"),
        (v2(0x21, 0x11, b"", length=MAX_V2_PAYLOAD + 1), "too long"),
        (v2(0x21, 0x11, b"", length=0xFFFF), "too long"),
        (v2(0x21, 0x11, INET_BLOCK, length=14), "closed inside"),
        (v2(0x21, 0x11, INET_BLOCK + b"\x04\x00"), "truncated TLV"),
        (v2(0x21, 0x11, INET_BLOCK + b"\x04\x00\x05abc"), "overruns"),
    ],
)
def test_refused(data: bytes, why: str) -> None:
    assert why in refused(data)


def test_bad_bytes_fail_without_waiting_for_the_rest() -> None:
    for data in [b"X", b"PRX", b"PROXY TCP4 1.2.3.4\n", V2_SIGNATURE[:3] + b"!"]:
        refused(data, close=False)


def test_need_data_until_complete() -> None:
    data = b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 8080\r\n"
    parser = ProxyHeaderParser()
    assert parser.next_header() is NEED_DATA
    for byte in data[:-1]:
        parser.receive_data(bytes([byte]))
        assert parser.next_header() is NEED_DATA
    parser.receive_data(data[-1:])
    header = parser.next_header()
    assert isinstance(header, ProxyHeader)
    assert parser.next_header() is header
    assert parser.trailing == b""


def test_local_misuse() -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(LocalProtocolError):
        _ = parser.trailing
    parser.receive_data(b"PROXY UNKNOWN\r\n")
    assert isinstance(parser.next_header(), ProxyHeader)
    with pytest.raises(LocalProtocolError):
        parser.receive_data(APP)
    closed = ProxyHeaderParser()
    closed.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        closed.receive_data(b"PROXY")


def test_longest_v1_headers_fit() -> None:
    longest = ":".join(["ffff"] * 8)
    tail = f"{longest} {longest} 65535 65535\r\n"
    unknown = f"PROXY UNKNOWN {tail}".encode()
    assert len(unknown) == MAX_V1_HEADER  # the spec's worst case
    assert parse(unknown + APP) == (ProxyHeader(1, Command.PROXY, Family.UNSPEC, None, None), APP)
    header, trailing = parse(f"PROXY TCP6 {tail}".encode() + APP)
    assert header.source == (longest, 65535)
    assert trailing == APP


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", True),
        (b"PROXY ", True),
        (b"PRO", True),
        (V2_SIGNATURE + b"\x21\x11", True),
        (V2_SIGNATURE[:4], True),
        (b"", False),
        (b"PROXIMA", False),
        (b'{"type":"hello"}', False),
        (b"Paul\n", False),
        (b"\r\n\r\nX", False),
    ],
)
def test_looks_like_proxy_header(prefix: bytes, expected: bool) -> None:
    assert looks_like_proxy_header(prefix) is expected


def test_builders_refuse_what_they_cannot_say() -> None:
    local = ProxyHeader(2, Command.LOCAL, Family.UNSPEC, None, None)
    unix = ProxyHeader(2, Command.PROXY, Family.UNIX, None, None)
    mixed = ProxyHeader(2, Command.PROXY, Family.INET, ("::1", 1), ("1.2.3.4", 2))
    for build, header in [(build_v1, local), (build_v1, unix), (build_v2, unix), (build_v2, mixed)]:
        with pytest.raises(LocalProtocolError):
            build(header)


# Random valid headers, and the bytes that carry them.

PORTS = st.integers(0, 0xFFFF)


@st.composite
def headers(draw: st.DrawFn, version: int) -> ProxyHeader:
    family = draw(st.sampled_from([Family.INET, Family.INET6, Family.UNSPEC]))
    if version == 2 and draw(st.booleans()) and family is Family.UNSPEC:
        return ProxyHeader(2, Command.LOCAL, Family.UNSPEC, None, None)
    if family is Family.UNSPEC:
        source = dest = None
    else:
        addresses = st.ip_addresses(v=4 if family is Family.INET else 6).map(str)
        source = (draw(addresses), draw(PORTS))
        dest = (draw(addresses), draw(PORTS))
    tlvs: tuple[tuple[int, bytes], ...] = ()
    if version == 2:
        tlv = st.tuples(st.integers(0, 0xFF), st.binary(max_size=40))
        tlvs = tuple(draw(st.lists(tlv, max_size=5)))
    return ProxyHeader(version, Command.PROXY, family, source, dest, tlvs)


def encoded(draw: st.DrawFn) -> tuple[ProxyHeader, bytes]:
    version = draw(st.sampled_from([1, 2]))
    header = draw(headers(version))
    return header, (build_v1 if version == 1 else build_v2)(header)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[ProxyHeader, bytes, bytes, list[bytes]]:
    """A header, the app's bytes after it, and all of it cut at random points."""
    header, data = encoded(draw)
    app = draw(st.binary(max_size=64))
    stream = data + app
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    return header, data, app, [chunk for chunk in chunks if chunk]


def _feed(chunks: list[bytes]) -> tuple[ProxyHeader, bytes]:
    """Feed like a server: until the header is out, then the rest goes to the app."""
    parser = ProxyHeaderParser()
    for i, chunk in enumerate(chunks):
        parser.receive_data(chunk)
        header = parser.next_header()
        if isinstance(header, ProxyHeader):
            return header, parser.trailing + b"".join(chunks[i + 1 :])
    raise AssertionError("no header after all the data")


def _round_trip_property(case: tuple[ProxyHeader, bytes, bytes, list[bytes]]) -> None:
    header, data, app, chunks = case
    assert parse(data + app) == (header, app)
    assert _feed(chunks) == (header, app)
    assert _feed([bytes([byte]) for byte in data + app]) == (header, app)


@FAST
@given(chunked())
def test_round_trip(case: tuple[ProxyHeader, bytes, bytes, list[bytes]]) -> None:
    _round_trip_property(case)


@pytest.mark.slow
@LONG
@given(chunked())
def test_round_trip_long(case: tuple[ProxyHeader, bytes, bytes, list[bytes]]) -> None:
    _round_trip_property(case)


def test_v1_addresses_come_back_canonical() -> None:
    header, _ = parse(b"PROXY TCP6 0:0:0:0:0:ffff:c000:201 ::FFFF:192.0.2.2 1 2\r\n")
    assert header.source == (str(ipaddress.IPv6Address("::ffff:192.0.2.1")), 1)
    assert header.dest == ("::ffff:c000:202", 2)


# Junk: only RemoteProtocolError may come out, whatever the bytes and however they arrive.


@st.composite
def junk(draw: st.DrawFn) -> list[bytes]:
    """Random bytes, often after a real signature or a real header mangled at one byte."""
    kind = draw(st.sampled_from(["raw", "v1", "v2", "mangled"]))
    if kind == "raw":
        data = draw(st.binary(max_size=300))
    elif kind == "v1":
        data = b"PROXY " + draw(st.binary(max_size=150))
    elif kind == "v2":
        data = V2_SIGNATURE + draw(st.binary(max_size=300))
    else:
        mangled = bytearray(encoded(draw)[1])
        mangled[draw(st.integers(0, len(mangled) - 1))] = draw(st.integers(0, 255))
        data = bytes(mangled)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _junk_property(chunks: list[bytes]) -> None:
    parser = ProxyHeaderParser()
    try:
        for chunk in [*chunks, b""]:
            parser.receive_data(chunk)
            if isinstance(parser.next_header(), ProxyHeader):
                return
    except RemoteProtocolError as exc:
        assert exc.code == "bad_proxy_header"


@FAST
@given(junk())
def test_junk_raises_only_remote_protocol_error(chunks: list[bytes]) -> None:
    _junk_property(chunks)


@pytest.mark.slow
@LONG
@given(junk())
def test_junk_raises_only_remote_protocol_error_long(chunks: list[bytes]) -> None:
    _junk_property(chunks)
