"""This machine's LAN addresses, read from its interfaces without sending any traffic."""

from __future__ import annotations

import ipaddress

import ifaddr


def lan_addresses() -> list[str]:
    """Every non-loopback IPv4 address of this machine, private ranges first."""
    found: set[ipaddress.IPv4Address] = set()
    try:
        adapters = ifaddr.get_adapters()
    except OSError:
        return []
    for adapter in adapters:
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 addresses come as tuples
            try:
                address = ipaddress.IPv4Address(ip.ip)
            except ValueError:
                continue
            if address.is_loopback or address.is_unspecified:
                continue
            found.add(address)
    # Link-local (169.254/16) addresses come last: they work only on the same cable. Python
    # counts them as private, so they are sorted out first.
    return [str(a) for a in sorted(found, key=lambda a: (a.is_link_local, not a.is_private, a))]
