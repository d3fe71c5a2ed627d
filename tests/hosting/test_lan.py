"""This machine's LAN addresses, as `up` prints them: IPv4 only, never loopback, no traffic."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import ifaddr
import pytest

from multichat.hosting.lan import ROUTE_TABLE, lan_addresses

ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"


def route_table(tmp_path: Path, *routes: tuple[str, str, int, str]) -> Path:
    """A routing table in Linux's /proc/net/route format: (interface, destination, metric,
    mask), in hex as the kernel writes them."""
    lines = [ROUTE_HEADER]
    for iface, destination, metric, mask in routes:
        lines.append(f"{iface}\t{destination}\t0102A8C0\t0003\t0\t0\t{metric}\t{mask}\t0\t0\t0")
    path = tmp_path / "route"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_this_machine_has_only_ipv4_non_loopback_lan_addresses() -> None:
    found = lan_addresses()
    assert len(found) == len(set(found))
    for address in found:
        assert isinstance(address, str)
        ip = ipaddress.ip_address(address)
        assert ip.version == 4
        assert not ip.is_loopback and not ip.is_unspecified


def test_this_machine_lists_its_default_routes_interface_first() -> None:
    try:
        routes = [line.split() for line in ROUTE_TABLE.read_text().splitlines()[1:]]
    except OSError:
        routes = []  # not Linux: the order is the private ranges' alone (below)
    defaults = [r[0] for r in routes if r[1:2] == ["00000000"] and r[7:8] == ["00000000"]]
    found = lan_addresses()
    if defaults and found:
        by_name = {adapter.name: adapter for adapter in ifaddr.get_adapters()}
        assert found[0] in [ip.ip for ip in by_name[defaults[0]].ips]


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


ADAPTERS = [
    _adapter("lo", "127.0.0.1", ("::1", 0, 0)),
    _adapter("wlan0", "169.254.3.4", "192.168.1.20", ("fe80::1", 0, 2)),
    _adapter("eth0", "93.184.216.34", "10.0.0.5", "0.0.0.0"),
    _adapter("tun0", "10.0.0.5", "not an address"),
]


def test_private_addresses_first_link_local_last_loopback_and_ipv6_never(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: ADAPTERS)
    no_table = tmp_path / "no such file"  # macOS, Windows: no routing table to read
    assert lan_addresses(no_table) == ["10.0.0.5", "192.168.1.20", "93.184.216.34", "169.254.3.4"]


@pytest.mark.parametrize(
    ("wlan0_metric", "expected"),
    [
        (600, ["10.0.0.5", "93.184.216.34", "192.168.1.20", "169.254.3.4"]),
        (50, ["192.168.1.20", "10.0.0.5", "93.184.216.34", "169.254.3.4"]),
    ],
)
def test_the_default_route_with_the_lowest_metric_picks_the_first_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wlan0_metric: int, expected: list[str]
) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: ADAPTERS)
    table = route_table(
        tmp_path,
        ("wlan0", "0001A8C0", 0, "00FFFFFF"),  # the Wi-Fi's own network: not a default route
        ("eth0", "00000000", 100, "00000000"),
        ("wlan0", "00000000", wlan0_metric, "00000000"),
    )
    assert lan_addresses(table) == expected


def test_a_routing_table_that_makes_no_sense_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: ADAPTERS)
    table = tmp_path / "route"
    table.write_bytes(b"garbage\n\xff\xfe\neth0 00000000 x y z w not-a-number 00000000\n")
    assert lan_addresses(table) == ["10.0.0.5", "192.168.1.20", "93.184.216.34", "169.254.3.4"]


def test_bridges_to_containers_and_virtual_machines_are_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    adapters = [
        _adapter("docker0", "172.17.0.1"),
        _adapter("br-5e2f1c0a9b7d", "172.18.0.1"),
        _adapter("virbr0", "192.168.122.1"),
        _adapter("vboxnet0", "192.168.56.1"),
        _adapter("vEthernet (WSL)", "172.24.160.1"),
        _adapter("wlp2s0", "192.168.1.20"),
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)
    assert lan_addresses(tmp_path / "no such file") == ["192.168.1.20"]


def test_no_interfaces_to_read_means_no_lan_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[ifaddr.Adapter]:
        raise OSError("getifaddrs failed")

    monkeypatch.setattr(ifaddr, "get_adapters", broken)
    assert lan_addresses() == []
