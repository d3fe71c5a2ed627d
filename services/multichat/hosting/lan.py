"""This machine's LAN addresses, read from its interfaces without sending any traffic."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import ifaddr

# Linux's routing table, as text: which interface the default route leaves by.
ROUTE_TABLE = Path("/proc/net/route")

# Bridges to containers and virtual machines on this machine, by interface name: nobody else on
# the LAN reaches them, and a host with Docker has one (docker0, 172.17.0.1) that sorted before
# its Wi-Fi's 192.168.x address, in the invites and the banner's QR code. (Names as Docker,
# Podman, libvirt, LXC/LXD, VirtualBox, VMware, CNI plugins and Windows' WSL and Hyper-V make
# them.)
VIRTUAL_BRIDGES = (
    "docker",
    "br-",
    "veth",
    "cni",
    "flannel",
    "podman",
    "virbr",
    "lxcbr",
    "lxdbr",
    "vboxnet",
    "vmnet",
    "vEthernet (WSL",
    "vEthernet (Default Switch)",
)


def lan_addresses(route_table: Path = ROUTE_TABLE) -> list[str]:
    """Every non-loopback IPv4 address of this machine's own interfaces: the default route's
    first (where the system says which, as Linux does in `route_table`), then the other
    private ones, then the rest; link-local last."""
    try:
        adapters = ifaddr.get_adapters()
    except OSError:
        return []
    default = _default_interface(route_table)
    found: dict[ipaddress.IPv4Address, bool] = {}  # address -> on the default route's interface
    for adapter in adapters:
        if adapter.nice_name.startswith(VIRTUAL_BRIDGES):
            continue
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 addresses come as tuples
            try:
                address = ipaddress.IPv4Address(ip.ip)
            except ValueError:
                continue
            if address.is_loopback or address.is_unspecified:
                continue
            found[address] = found.get(address, False) or adapter.name == default
    # Link-local (169.254/16) addresses come last: they work only on the same cable. Python
    # counts them as private, so they are sorted out first.
    return [
        str(a)
        for a in sorted(found, key=lambda a: (a.is_link_local, not found[a], not a.is_private, a))
    ]


def _default_interface(route_table: Path) -> str | None:
    """The interface of the default route with the lowest metric, if `route_table` (Linux's
    /proc/net/route format) can be read; None elsewhere."""
    try:
        lines = route_table.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines[1:]:  # after the header
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue  # not a default route (destination and mask 0.0.0.0)
        try:
            metric = int(fields[6])
        except ValueError:
            continue
        if best is None or metric < best[0]:
            best = (metric, fields[0])
    return None if best is None else best[1]
