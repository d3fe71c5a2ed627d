"""ADDRESS parsing: everything people paste works, everything else is one clear line."""

from __future__ import annotations

from dataclasses import replace

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
        (
            "ssh://host:22",
            "cannot use ssh://; use https://, http://, wss://, ws://, tcp:// or multichat://",
        ),
        ("ftp://host", "use https://"),
        ("\x1b[2J://host", "cannot use that scheme"),
        ("://host", "cannot use that scheme"),
        ("https://", "no host"),
        ("https:///ws", "no host"),
        ("http://::1", "brackets"),
        ("wss://fe80::1:443/ws", "brackets"),
        ("https://user:pw@host", "not an address"),
        ("https://host:0", "between 1 and 65535"),
        ("https://host:https", "port must be a number"),
        ("wss://host:99999/ws", "between 1 and 65535"),
        ("wss://host/caf\u00e9", "plain ASCII"),
        ("https://ho$t", "not a host name"),
        ("https://a b", "not an address"),
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
        ("a..b", "not a host name"),
        ("https://" + "a" * 64 + ".example", "not a host name"),
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


@pytest.mark.parametrize(
    ("text", "host", "port", "transport", "path"),
    [
        # ngrok's free plan: what its dashboard and `multichat up` print.
        ("https://abc.ngrok-free.app", "abc.ngrok-free.app", 443, "wss", "/ws"),
        ("https://abc.ngrok-free.app/", "abc.ngrok-free.app", 443, "wss", "/ws"),
        # The page's link, pasted from the browser: the socket is still /ws.
        ("  https://abc.ngrok-free.app/room?x=1#top \n", "abc.ngrok-free.app", 443, "wss", "/ws"),
        ("HTTPS://ABC.ngrok-free.app/ws", "ABC.ngrok-free.app", 443, "wss", "/ws"),
        ("https://host.example:8443", "host.example", 8443, "wss", "/ws"),
        ("https://[2001:db8::1]:8443/", "2001:db8::1", 8443, "wss", "/ws"),
        # A LAN room: the room's port, plain WebSocket.
        ("http://192.168.1.20:5002", "192.168.1.20", 5002, "ws", "/ws"),
        ("http://my-laptop.local:5002/", "my-laptop.local", 5002, "ws", "/ws"),
        ("http://[::1]:5002", "::1", 5002, "ws", "/ws"),
        ("http://192.168.1.20", "192.168.1.20", 80, "ws", "/ws"),
        # ws:// and wss:// keep their path, for a room behind a proxy that moves it.
        ("wss://abc.ngrok-free.app/ws", "abc.ngrok-free.app", 443, "wss", "/ws"),
        ("wss://proxy.example/chat/ws?room=1", "proxy.example", 443, "wss", "/chat/ws?room=1"),
        ("wss://proxy.example", "proxy.example", 443, "wss", "/ws"),
        ("wss://proxy.example/#x", "proxy.example", 443, "wss", "/ws"),
        ("ws://192.168.1.20:5002/ws", "192.168.1.20", 5002, "ws", "/ws"),
        ("ws://10.0.0.2?k=v", "10.0.0.2", 80, "ws", "/?k=v"),
    ],
)
def test_accepted_web_addresses(text: str, host: str, port: int, transport: str, path: str) -> None:
    assert parse_address(text) == Address(host, port, transport, path)  # type: ignore[arg-type]


def test_tcp_forms_keep_the_tcp_transport() -> None:
    address = parse_address("tcp://0.tcp.ngrok.io:12345")
    assert address.transport == "tcp"
    assert address == Address("0.tcp.ngrok.io", 12345)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("0.tcp.ngrok.io:12345", "0.tcp.ngrok.io:12345"),
        ("tcp://0.tcp.ngrok.io:12345", "0.tcp.ngrok.io:12345"),
        ("[::1]:5002", "[::1]:5002"),
        ("10.0.0.2:5002", "10.0.0.2:5002"),
        ("https://abc.ngrok-free.app/room", "https://abc.ngrok-free.app"),
        ("wss://abc.ngrok-free.app/ws", "https://abc.ngrok-free.app"),
        ("https://abc.ngrok-free.app:443", "https://abc.ngrok-free.app"),
        ("http://192.168.1.20:5002", "http://192.168.1.20:5002"),
        ("ws://[::1]:80", "http://[::1]"),
        ("wss://proxy.example:8443/chat/ws", "wss://proxy.example:8443/chat/ws"),
        ("ws://proxy.example/chat", "ws://proxy.example/chat"),
    ],
)
def test_str_is_readable_and_round_trips(text: str, shown: str) -> None:
    address = parse_address(text)
    assert str(address) == shown
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    ("text", "host_header"),
    [
        ("https://abc.ngrok-free.app", "abc.ngrok-free.app"),
        ("https://abc.ngrok-free.app:8443", "abc.ngrok-free.app:8443"),
        ("http://192.168.1.20:5002", "192.168.1.20:5002"),
        ("http://192.168.1.20", "192.168.1.20"),
        ("http://[::1]:5002", "[::1]:5002"),
    ],
)
def test_http_host_names_the_port_only_when_not_the_default(text: str, host_header: str) -> None:
    assert parse_address(text).http_host == host_header


def test_default_port_is_the_servers() -> None:
    assert parse_address("lan-host", default_port=6000).port == 6000


def check_address_or_one_line(text: str) -> None:
    """Whatever is pasted, the answer is an address that reads back the same, or one line."""
    try:
        address = parse_address(text)
    except AddressError as exc:
        assert "\n" not in str(exc)
        assert "\r" not in str(exc)
    else:
        assert 1 <= address.port <= 65535
        assert address.host
        assert address.path.startswith("/") and address.path.isascii()
        address.http_host.encode("idna")  # what wsproto sends as the Host header
        assert parse_address(address.url) == replace(address, invite=None)
        if address.fingerprint is None:
            assert parse_address(str(address)) == address


@given(st.text(max_size=60))
def test_only_address_error(text: str) -> None:
    check_address_or_one_line(text)


@given(
    st.sampled_from(
        ["http://", "https://", "ws://", "wss://", "HTTPS://", "tcp://", "multichat://", ""]
    ),
    st.text(alphabet="abc.-_:[]/?#%@19 \u00e9", max_size=40),
)
def test_web_links_give_an_address_or_one_line(scheme: str, rest: str) -> None:
    check_address_or_one_line(scheme + rest)


# --------------------------------------------------------------------------- invites

FP = "3f" * 32
TOKEN = "Zk4_mW-2pQ9xLr7TbN1cYg"


@pytest.mark.parametrize(
    ("text", "host", "port", "room", "invite"),
    [
        (f"multichat://192.168.1.20:5002/?room=den&fp={FP}", "192.168.1.20", 5002, "den", None),
        (
            f"multichat://0.tcp.ngrok.io:12345/?fp={FP}&room=den",
            "0.tcp.ngrok.io",
            12345,
            "den",
            None,
        ),
        (f"  MULTICHAT://[::1]:7000/?room=den&fp={FP} \n", "::1", 7000, "den", None),
        (f"multichat://lan-host?fp={FP}", "lan-host", 5002, None, None),
        (f"multichat://h:1/?room=Book%20club%20%26%20co&fp={FP}", "h", 1, "Book club & co", None),
        (f"multichat://h:1/?room=den&fp={FP}&invite={TOKEN}", "h", 1, "den", TOKEN),
        (f"multichat://h:1/?room=den&fp={FP}#invite={TOKEN}", "h", 1, "den", TOKEN),
        (f"multichat://h:1/?room=den&fp={FP}&utm_source=chat", "h", 1, "den", None),
    ],
)
def test_invites_pin_the_rooms_certificate(
    text: str, host: str, port: int, room: str | None, invite: str | None
) -> None:
    address = parse_address(text)
    assert (address.host, address.port, address.transport) == (host, port, "tcp")
    assert address.fingerprint == FP and address.tls
    assert (address.room, address.invite) == (room, invite)


def test_a_fingerprint_as_openssl_prints_it_is_the_same() -> None:
    colons = ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper()
    assert parse_address(f"multichat://h:1/?fp={colons}").fingerprint == FP


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("multichat://h:1/?room=den", "no fp="),
        ("multichat://h:1", "no fp="),
        ("multichat://h:1/?fp=", "no fp="),
        (f"multichat://h:1/?fp={FP[:-2]}", "64 hex digits"),
        (f"multichat://h:1/?fp={FP[:-1]}g", "64 hex digits"),
        (f"multichat://h:1/?fp={FP}&fp={FP}", "gives 'fp' twice"),
        (f"multichat://h:1/?fp={FP}&invite=a&invite=b", "gives 'invite' twice"),
        (f"multichat://h:1/?fp={FP}&invite=a#invite=b", "gives 'invite' twice"),
        (f"multichat://h:1/?fp={FP}&invite=a%20b", "invite token is not valid"),
        (f"multichat://h:1/?fp={FP}&invite=" + "a" * 129, "invite token is not valid"),
        (f"multichat://h:1/?fp={FP}&invite=", "invite token is not valid"),
        ("https://h/#invite=%0a", "invite token is not valid"),
        (f"multichat://::1/?fp={FP}", "brackets"),
        (f"multichat://h:99999/?fp={FP}", "between 1 and 65535"),
        (f"multichat://u@h/?fp={FP}", "not an address"),
        (f"multichat:///?fp={FP}", "no host"),
    ],
)
def test_a_bad_invite_is_one_line(text: str, says: str) -> None:
    test_refused(text, says)


def test_a_personal_invite_on_the_link_rides_in_the_fragment() -> None:
    address = parse_address(f"https://abc.ngrok-free.app/#invite={TOKEN}")
    assert address == Address("abc.ngrok-free.app", 443, "wss", "/ws", invite=TOKEN)
    assert address.tls and address.fingerprint is None
    assert parse_address("https://abc.ngrok-free.app/#top").invite is None


def test_a_link_to_one_room_names_it_in_the_fragment() -> None:
    address = parse_address("https://abc.ngrok-free.app/#room=games")
    assert address == Address("abc.ngrok-free.app", 443, "wss", "/ws", room="games")
    both = parse_address(f"http://192.168.1.20:5002/#invite={TOKEN}&room=den%20club")
    assert (both.room, both.invite, both.port) == ("den club", TOKEN, 5002)
    assert parse_address("https://abc.ngrok-free.app/#room=").room is None
    assert str(address) == "https://abc.ngrok-free.app"


def test_the_token_is_never_shown() -> None:
    """An address goes into error messages and logs; the token is a password."""
    for text in (
        f"multichat://h:1/?room=den&fp={FP}&invite={TOKEN}",
        f"https://abc.ngrok-free.app/#invite={TOKEN}",
    ):
        address = parse_address(text)
        assert address.invite == TOKEN
        assert TOKEN not in str(address) + repr(address) + address.url


def test_an_invite_reads_short_and_round_trips_without_its_token() -> None:
    address = parse_address(f"multichat://[fe80::1]:5002/?room=den%20club&fp={FP}&invite={TOKEN}")
    assert str(address) == "multichat://[fe80::1]:5002"
    assert address.url == f"multichat://[fe80::1]:5002/?room=den%20club&fp={FP}"
    assert parse_address(address.url) == replace(address, invite=None)
