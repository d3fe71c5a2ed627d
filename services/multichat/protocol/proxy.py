"""The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2), sans-I/O and strict.

A tunnel (ngrok) that accepts a connection for us opens its own to our port, and so hides the
friend's address; with the PROXY protocol it first sends a header naming it. The header is
trusted only from the tunnel: a LAN listener refuses anything that `looks_like_proxy_header`.

The parser never consumes bytes past the header: whatever came with it is `trailing`, and
belongs to the application protocol.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError
from .events import NEED_DATA, NeedData

# The spec's worst case: "PROXY UNKNOWN ffff:...:ffff ffff:...:ffff 65535 65535\r\n".
MAX_V1_HEADER = 107
V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family, 2-byte length
# The address block is 216 bytes at most (UNIX); room besides for the TLVs senders add (TLS
# details, cloud endpoint ids) without letting a peer make us buffer the full 64 KiB.
MAX_V2_PAYLOAD = 2048

_ERROR_CODE = "bad_proxy_header"
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class Command(enum.Enum):
    LOCAL = "LOCAL"  # the tunnel's own health check: no client behind it
    PROXY = "PROXY"


class Family(enum.Enum):
    UNSPEC = "UNSPEC"  # v1 "UNKNOWN"
    INET = "INET"  # v1 "TCP4"
    INET6 = "INET6"  # v1 "TCP6"
    UNIX = "UNIX"  # v2 only; paths are not addresses we can use, so source is None


_V1_FAMILIES = {"TCP4": Family.INET, "TCP6": Family.INET6, "UNKNOWN": Family.UNSPEC}
_V2_FAMILIES = {0x0: Family.UNSPEC, 0x1: Family.INET, 0x2: Family.INET6, 0x3: Family.UNIX}
_V2_ADDRESS_BYTES = {Family.UNSPEC: 0, Family.INET: 12, Family.INET6: 36, Family.UNIX: 216}
_V2_STREAM = 0x1
_V2_UNSPEC_TRANSPORT = 0x0


@dataclass(frozen=True)
class ProxyHeader:
    """One PROXY header. `source` and `dest` are None unless the family is INET or INET6."""

    version: int
    command: Command
    family: Family
    source: tuple[str, int] | None
    dest: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = ()


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=_ERROR_CODE)


def _starts_like(data: bytes | bytearray, signature: bytes) -> bool:
    return data[: len(signature)] == signature[: len(data)]


def looks_like_proxy_header(prefix: bytes) -> bool:
    """Whether `prefix`, the first bytes of a connection, starts like a PROXY header.

    A prefix shorter than the signature counts if it matches as far as it goes.
    """
    return bool(prefix) and (
        _starts_like(prefix, V1_SIGNATURE) or _starts_like(prefix, V2_SIGNATURE)
    )


class ProxyHeaderParser:
    """Reads one PROXY header, v1 or v2, off the front of a connection. No I/O.

    Feed bytes with `receive_data` (b"" for end of file) and call `next_header` until it
    returns the header; then hand `trailing` to the application.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._closed = False
        self._header: ProxyHeader | None = None
        self._trailing = b""

    @property
    def trailing(self) -> bytes:
        """The bytes received after the header: the start of the application's stream."""
        if self._header is None:
            raise LocalProtocolError("the PROXY header is not complete yet")
        return self._trailing

    def receive_data(self, data: bytes) -> None:
        if self._header is not None:
            raise LocalProtocolError("the PROXY header is complete; data goes to the app now")
        if self._closed:
            raise LocalProtocolError("data after end of file")
        if data:
            self._buffer += data
        else:
            self._closed = True

    def next_header(self) -> ProxyHeader | NeedData:
        """The header once complete, else NEED_DATA. Raises RemoteProtocolError only."""
        if self._header is not None:
            return self._header
        result: tuple[ProxyHeader, int] | NeedData
        if not self._buffer:
            result = NEED_DATA
        elif self._buffer[0] == V1_SIGNATURE[0]:
            result = self._parse_v1()
        elif self._buffer[0] == V2_SIGNATURE[0]:
            result = self._parse_v2()
        else:
            raise _bad("the connection does not start with a PROXY header")
        if isinstance(result, NeedData):
            if self._closed:
                raise _bad("the connection closed inside the PROXY header")
            return NEED_DATA
        header, size = result
        self._header = header
        self._trailing = bytes(self._buffer[size:])
        self._buffer = bytearray()
        return header

    def _parse_v1(self) -> tuple[ProxyHeader, int] | NeedData:
        buffer = self._buffer
        if not _starts_like(buffer, V1_SIGNATURE):
            raise _bad("bad PROXY v1 signature")
        end = buffer.find(b"\r\n", 0, MAX_V1_HEADER)
        line = bytes(buffer[: end if end >= 0 else MAX_V1_HEADER])
        # Bad bytes fail at once, without waiting for the rest of the line.
        printable = line.rstrip(b"\r") if end < 0 else line
        if not all(0x20 <= byte < 0x7F for byte in printable):
            raise _bad("PROXY v1 header has a byte that is not printable ASCII")
        if end < 0:
            if len(buffer) >= MAX_V1_HEADER:
                raise _bad(f"PROXY v1 header has no CRLF within {MAX_V1_HEADER} bytes")
            return NEED_DATA
        return _v1_header(line.decode("ascii")), end + 2

    def _parse_v2(self) -> tuple[ProxyHeader, int] | NeedData:
        buffer = self._buffer
        if not _starts_like(buffer, V2_SIGNATURE):
            raise _bad("bad PROXY v2 signature")
        if len(buffer) < V2_FIXED:
            return NEED_DATA
        version, command_bits = buffer[12] >> 4, buffer[12] & 0xF
        if version != 2:
            raise _bad(f"unsupported PROXY protocol version {version}")
        if command_bits not in (0x0, 0x1):
            raise _bad(f"unknown PROXY v2 command {command_bits:#x}")
        command = Command.LOCAL if command_bits == 0x0 else Command.PROXY
        length = int.from_bytes(buffer[14:16], "big")
        if length > MAX_V2_PAYLOAD:
            raise _bad(f"PROXY v2 header too long ({length} bytes; at most {MAX_V2_PAYLOAD})")
        family = Family.UNSPEC
        if command is Command.PROXY:
            family = _v2_family(buffer[13])
            if length < _V2_ADDRESS_BYTES[family]:
                raise _bad(f"PROXY v2 address block too short for {family.value}")
        if len(buffer) < V2_FIXED + length:
            return NEED_DATA
        payload = bytes(buffer[V2_FIXED : V2_FIXED + length])
        if command is Command.LOCAL:
            # The spec: discard the block, family included, and use the real endpoints.
            return ProxyHeader(2, command, Family.UNSPEC, None, None), V2_FIXED + length
        split = _V2_ADDRESS_BYTES[family]
        source, dest = _v2_addresses(family, payload[:split])
        tlvs = _v2_tlvs(payload[split:])
        return ProxyHeader(2, command, family, source, dest, tlvs), V2_FIXED + length


def _v1_header(line: str) -> ProxyHeader:
    fields = line.split(" ")
    if len(fields) < 2 or fields[1] not in _V1_FAMILIES:
        raise _bad("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    family = _V1_FAMILIES[fields[1]]
    if family is Family.UNSPEC:
        # The spec: the receiver ignores whatever follows UNKNOWN up to the CRLF.
        return ProxyHeader(1, Command.PROXY, family, None, None)
    if len(fields) != 6:
        raise _bad("PROXY v1 header needs two addresses and two ports, one space apart")
    source_address, dest_address, source_port, dest_port = fields[2:]
    return ProxyHeader(
        1,
        Command.PROXY,
        family,
        (_v1_address(family, source_address), _v1_port(source_port)),
        (_v1_address(family, dest_address), _v1_port(dest_port)),
    )


def _v1_address(family: Family, text: str) -> str:
    try:
        if family is Family.INET:
            return str(ipaddress.IPv4Address(text))
        # ipaddress accepts a "%scope" suffix; inet_pton, the spec's reference, does not.
        if "%" not in text:
            return str(ipaddress.IPv6Address(text))
    except ValueError:
        pass
    raise _bad(f"bad {family.value} address in PROXY v1 header")


def _v1_port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 0xFFFF:
        raise _bad("bad port in PROXY v1 header")
    return int(text)


def _v2_family(byte: int) -> Family:
    family = _V2_FAMILIES.get(byte >> 4)
    transport = byte & 0xF
    if family is None or transport > 0x2:
        raise _bad(f"unknown PROXY v2 address family {byte:#04x}")
    if (family is Family.UNSPEC) != (transport == _V2_UNSPEC_TRANSPORT):
        raise _bad(f"unknown PROXY v2 address family {byte:#04x}")
    if family is not Family.UNSPEC and transport != _V2_STREAM:
        raise _bad("PROXY v2 header for a datagram on a stream connection")
    return family


def _v2_addresses(
    family: Family, block: bytes
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    if family is Family.INET:
        source, dest, ports = block[0:4], block[4:8], block[8:12]
    elif family is Family.INET6:
        source, dest, ports = block[0:16], block[16:32], block[32:36]
    else:
        return None, None
    return (
        (str(ipaddress.ip_address(source)), int.from_bytes(ports[0:2], "big")),
        (str(ipaddress.ip_address(dest)), int.from_bytes(ports[2:4], "big")),
    )


def _v2_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise _bad("truncated TLV in PROXY v2 header")
        kind, size = data[offset], int.from_bytes(data[offset + 1 : offset + 3], "big")
        value = data[offset + 3 : offset + 3 + size]
        if len(value) != size:
            raise _bad("TLV overruns the PROXY v2 header")
        tlvs.append((kind, value))
        offset += 3 + size
    return tuple(tlvs)


def build_v1(header: ProxyHeader) -> bytes:
    """The v1 form of `header` (`version` is ignored); for tests and the stand-in tunnel."""
    if header.command is not Command.PROXY:
        raise LocalProtocolError("PROXY v1 has no LOCAL command")
    if header.family is Family.UNSPEC:
        return b"PROXY UNKNOWN\r\n"
    if header.family is Family.UNIX or header.source is None or header.dest is None:
        raise LocalProtocolError("PROXY v1 carries TCP4 or TCP6 addresses only")
    protocol = "TCP4" if header.family is Family.INET else "TCP6"
    (source, source_port), (dest, dest_port) = header.source, header.dest
    line = f"PROXY {protocol} {source} {dest} {source_port} {dest_port}\r\n"
    return line.encode("ascii")


def build_v2(header: ProxyHeader) -> bytes:
    """The v2 form of `header` (`version` is ignored); for tests and the stand-in tunnel."""
    if header.command is Command.LOCAL:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    block = b""
    if header.family is Family.UNIX:
        raise LocalProtocolError("build_v2 does not build UNIX addresses")
    if header.family is not Family.UNSPEC:
        if header.source is None or header.dest is None:
            raise LocalProtocolError(f"a {header.family.value} header needs both addresses")
        (source, source_port), (dest, dest_port) = header.source, header.dest
        for address in (source, dest):
            packed = ipaddress.ip_address(address).packed
            if len(packed) != (4 if header.family is Family.INET else 16):
                raise LocalProtocolError(f"{address} is not a {header.family.value} address")
            block += packed
        block += source_port.to_bytes(2, "big") + dest_port.to_bytes(2, "big")
    for kind, value in header.tlvs:
        block += bytes([kind]) + len(value).to_bytes(2, "big") + value
    family_byte = {Family.UNSPEC: 0x00, Family.INET: 0x11, Family.INET6: 0x21}[header.family]
    return V2_SIGNATURE + bytes([0x21, family_byte]) + len(block).to_bytes(2, "big") + block
