"""What `serve` and `up` read from their options and the config file, and the room server
they start from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..hosting.process import HostError
from ..server.backplane_address import BackplaneAddress
from ..server.backplane_address import parse_address as parse_backplane
from ..server.backplane_errors import BackplaneError
from ..server.limits import (
    NODE_TIMEOUT_SECONDS,
    Limits,
    LimitsError,
    load_limits,
    load_node_timeout,
    load_open_rooms,
)
from ..server.listeners import ChatServer
from .app import fail

if TYPE_CHECKING:
    from ..hosting.roomdata import RoomData


def load_config(config: Path | None) -> Limits:
    try:
        return load_limits(config) if config is not None else Limits()
    except LimitsError as exc:
        raise fail(str(exc)) from None


def room_names(rooms: list[str] | None, limits: Limits) -> list[str]:
    """The rooms `--room` names (the first is the default), checked; or exit."""
    from ..hosting.roomdata import check_rooms

    try:
        names = check_rooms(rooms or ["multichat"])
    except HostError as exc:
        raise fail(str(exc), 2) from None
    if len(names) > limits.max_rooms:
        raise fail(f"{len(names)} rooms, but max_rooms is {limits.max_rooms} (see --config)", 2)
    return names


@dataclass(frozen=True)
class BackplaneSettings:
    address: BackplaneAddress
    node_timeout: float


def backplane_setting(url: str | None, config: Path | None) -> BackplaneSettings | None:
    """`--backplane`, parsed, with the config file's `[backplane] node_timeout`; or exit."""
    if not url:
        return None
    try:
        address = parse_backplane(url)
        timeout = NODE_TIMEOUT_SECONDS
        if config is not None:
            timeout = load_node_timeout(config, NODE_TIMEOUT_SECONDS)
    except (BackplaneError, LimitsError) as exc:
        raise fail(str(exc), 2) from None
    return BackplaneSettings(address, timeout)


def open_rooms_setting(config: Path | None) -> bool:
    """Whether members may make rooms (`open_rooms = true` in the config file)."""
    try:
        return load_open_rooms(config) if config is not None else False
    except LimitsError as exc:
        raise fail(str(exc)) from None


def open_room(
    rooms: list[str],
    data_dir: Path | None,
    ephemeral: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    config: Path | None,
) -> RoomData:
    """What the room keeps between runs (docs/history.md, docs/invites.md), or exit."""
    # cryptography takes a while to load: only the commands that host a room need it.
    from ..hosting.roomdata import RoomData

    try:
        return RoomData.open(
            rooms[0],
            rooms=rooms[1:],
            data_dir=data_dir,
            ephemeral=ephemeral,
            tls_cert=tls_cert,
            tls_key=tls_key,
            config=config,
        )
    except HostError as exc:
        raise fail(str(exc)) from None


def room_server(
    password: str,
    rooms: list[str],
    limits: Limits,
    token: str,
    data: RoomData,
    *,
    open_rooms: bool = False,
    backplane: BackplaneSettings | None = None,
) -> ChatServer:
    """The server of `rooms` (the first is the default), with their histories and certificate;
    invites restored and kept."""
    if data.settings.resume_max != limits.resume_max:
        limits = limits.replace(resume_max=data.settings.resume_max)
    server = ChatServer(
        password,
        room=rooms[0],
        rooms=rooms[1:],
        open_rooms=open_rooms,
        limits=limits,
        control_token=token,
        tls=data.certificate.context,
        history=data.history,
        room_history=data.open_room_history,
        history_settings=data.settings,
        backplane=backplane.address if backplane else None,
        node_timeout=backplane.node_timeout if backplane else NODE_TIMEOUT_SECONDS,
    )
    try:
        data.serve(server)
    except HostError as exc:
        data.close()
        raise fail(str(exc)) from None
    return server
