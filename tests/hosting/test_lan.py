"""This machine's LAN addresses, as `up` prints them: IPv4 only, never loopback, no traffic."""

from __future__ import annotations

import ipaddress
import socket

import ifaddr
import pytest

from multichat.hosting.lan import lan_addresses


def test_this_machine_has_only_ipv4_non_loopback_lan_addresses() -> None:
    found = lan_addresses()
    assert len(found) == len(set(found))
    for address in found:
        assert isinstance(address, str)
        ip = ipaddress.ip_address(address)
        assert ip.version == 4
        assert not ip.is_loopback and not ip.is_unspecified


def test_reading_the_addresses_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sockets(*args: object, **kwargs: object) -> None:
        raise AssertionError("lan_addresses opened a socket")

    expected = lan_addresses()
    monkeypatch.setattr(socket, "socket", no_sockets)
    monkeypatch.setattr(socket, "create_connection", no_sockets)
    monkeypatch.setattr(socket, "getaddrinfo", no_sockets)
    assert lan_addresses() == expected


def _adapter(name: str, *ips: str | tuple[str, int, int]) -> ifaddr.Adapter:
    return ifaddr.Adapter(name, name, [ifaddr.IP(ip, 24, name) for ip in ips])


def test_private_addresses_first_link_local_last_loopback_and_ipv6_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapters = [
        _adapter("lo", "127.0.0.1", ("::1", 0, 0)),
        _adapter("wlan0", "169.254.3.4", "192.168.1.20", ("fe80::1", 0, 2)),
        _adapter("eth0", "93.184.216.34", "10.0.0.5", "0.0.0.0"),
        _adapter("docker0", "10.0.0.5", "not an address"),
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    assert lan_addresses() == ["10.0.0.5", "192.168.1.20", "93.184.216.34", "169.254.3.4"]


def test_no_interfaces_to_read_means_no_lan_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[ifaddr.Adapter]:
        raise OSError("getifaddrs failed")

    monkeypatch.setattr(ifaddr, "get_adapters", broken)
    assert lan_addresses() == []
