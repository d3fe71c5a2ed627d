"""ADDRESS parsing: everything people paste works, everything else is one clear line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multichat.client.address import Address, AddressError, parse_address


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("tcp://0.tcp.ngrok.io:12345", "0.tcp.ngrok.io", 12345),
        ("TCP://4.tcp.eu.ngrok.io:19876", "4.tcp.eu.ngrok.io", 19876),
        ("  tcp://0.tcp.ngrok.io:12345/ \n", "0.tcp.ngrok.io", 12345),
        ("example.com:6000", "example.com", 6000),
        ("localhost", "localhost", 5002),
        ("192.168.1.20", "192.168.1.20", 5002),
        ("192.168.1.20:5003", "192.168.1.20", 5003),
        ("my-laptop.local", "my-laptop.local", 5002),
        ("[::1]:5002", "::1", 5002),
        ("[::1]", "::1", 5002),
        ("[fe80::1%eth0]:7000", "fe80::1%eth0", 7000),
        ("::1", "::1", 5002),
        ("2001:db8::42", "2001:db8::42", 5002),
        ("tcp://[2001:db8::1]:443", "2001:db8::1", 443),
        ("host.example.:80", "host.example", 80),
    ],
)
def test_accepted(text: str, host: str, port: int) -> None:
    assert parse_address(text) == Address(host, port)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://example.com", "tcp://"),
        ("https://abc.ngrok.app", "tcp://"),
        ("ssh://host:22", "tcp://"),
        ("host:", "port must be a number"),
        ("host:abc", "port must be a number"),
        ("host:0", "between 1 and 65535"),
        ("host:65536", "between 1 and 65535"),
        ("host:-1", "port must be a number"),
        ("host:٣٣", "port must be a number"),
        (":5002", "no host"),
        ("[::1", "missing ']'"),
        ("[::1]x", "expected ':PORT'"),
        ("[127.0.0.1]:80", "only IPv6"),
        ("[zz::1]:80", "not an IPv6 address"),
        ("gg::1", "not an IPv6 address"),
        ("two words", "not an address"),
        ("user@host", "not an address"),
        ("host/path", "not an address"),
        ("-host", "not a host name"),
        ("ho$t", "not a host name"),
        ("a" * 260, "too long"),
        ("x" * 400, "too long"),
    ],
)
def test_refused(text: str, says: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert says in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_str_round_trips() -> None:
    for text in ["0.tcp.ngrok.io:12345", "[::1]:5002", "10.0.0.2:5002"]:
        address = parse_address(text)
        assert str(address) == text
        assert parse_address(str(address)) == address


def test_default_port_is_the_servers() -> None:
    assert parse_address("lan-host", default_port=6000).port == 6000


@given(st.text(max_size=60))
def test_only_address_error(text: str) -> None:
    """Whatever is pasted, the answer is an address or one AddressError line."""
    try:
        address = parse_address(text)
    except AddressError as exc:
        assert "\n" not in str(exc)
    else:
        assert 1 <= address.port <= 65535
        assert address.host
