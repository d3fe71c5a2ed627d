"""What a server's rooms keep between runs, opened before they start: the data directory
(locked to this process), each room's history, the TLS certificate and personal invites.

`serve` and `up` open it with `RoomData.open` and close it after the server stopped. Every way
this can fail is a `HostError` with one line for the host; nothing is overwritten. The first
room's history is where a server of one room has always kept it; every other room's is in the
data directory's `rooms/` (datadir.py), opened at start for the host's rooms and when made
for the others (`open_room_history`). With `--ephemeral` nothing touches the disk: no history
beyond what each room holds in memory (a resume reaches as far back as that), bans and invites
for this run, the certificate new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..protocol.errors import ProtocolError
from ..protocol.names import check_room_name, room_key
from ..server.history import HistoryError, HistoryStore
from ..server.history_settings import HistorySettings, load_history_settings
from ..server.limits import LimitsError
from ..server.listeners import ChatServer
from . import invite_store
from .certificate import CertificateError, RoomCertificate, room_certificate
from .datadir import (
    HISTORY_FILE,
    DataDir,
    DataDirError,
    default_data_dir,
    make_private_dir,
    room_dir,
)
from .process import HostError


def check_rooms(rooms: Sequence[str]) -> list[str]:
    """The rooms' names as the server shows them, the first first; HostError for a name that
    is not allowed, or two that name one room."""
    names: dict[str, str] = {}
    for raw in rooms:
        try:
            name = check_room_name(raw)
        except ProtocolError as exc:
            raise HostError(f"--room {raw!r}: {exc}") from None
        if room_key(name) in names:
            raise HostError(f"--room {raw!r} names the same room as {names[room_key(name)]!r}")
        names[room_key(name)] = name
    return list(names.values())


@dataclass
class RoomData:
    """The data directory (None: ephemeral), the first room's history, the certificate; the
    other rooms' histories, by room key."""

    directory: DataDir | None
    history: HistoryStore | None
    certificate: RoomCertificate
    settings: HistorySettings
    rooms: dict[str, HistoryStore] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        room: str,
        *,
        rooms: Sequence[str] = (),
        data_dir: Path | None = None,
        ephemeral: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        config: Path | None = None,
    ) -> RoomData:
        """Open (or make) everything the rooms keep: `room` is the first, `rooms` the host's
        others. Raises HostError."""
        if ephemeral and data_dir is not None:
            raise HostError("give --data-dir or --ephemeral, not both")
        try:
            settings = load_history_settings(config) if config is not None else HistorySettings()
        except LimitsError as exc:
            raise HostError(str(exc)) from None
        directory: DataDir | None = None
        history: HistoryStore | None = None
        try:
            if not ephemeral:
                directory = DataDir.open(data_dir or default_data_dir(room))
                history = HistoryStore.open(directory.history_path)
            certificate = room_certificate(directory.path if directory else None, tls_cert, tls_key)
        except (DataDirError, HistoryError, CertificateError) as exc:
            if history is not None:
                history.close()
            if directory is not None:
                directory.close()
            raise HostError(str(exc)) from None
        data = cls(directory, history, certificate, settings)
        try:
            for name in rooms:
                data.open_room_history(name)
        except HistoryError as exc:
            data.close()
            raise HostError(str(exc)) from None
        return data

    def open_room_history(self, room: str) -> HistoryStore | None:
        """The history of `room`, a room other than the first (None when ephemeral), opened
        or made in `rooms/` of the data directory. Raises HistoryError. Safe in a thread: the
        server opens a room made while it runs in one."""
        if self.directory is None:
            return None
        key = room_key(room)
        store = self.rooms.get(key)
        if store is None:
            path = room_dir(self.directory.path, room)
            try:
                make_private_dir(path)
            except DataDirError as exc:
                raise HistoryError(str(exc)) from None
            store = self.rooms[key] = HistoryStore.open(path / HISTORY_FILE)
        return store

    def serve(self, server: ChatServer) -> None:
        """Hand `server` what it keeps across runs: personal invites (saved on every change)."""
        if self.directory is None:
            return
        try:
            invite_store.keep(server.ctx.invites, self.directory.path)
        except invite_store.InviteStoreError as exc:
            raise HostError(str(exc)) from None

    def close(self) -> None:
        """After the server stopped: close the histories, then let the directory go."""
        for store in self.rooms.values():
            store.close()
        self.rooms.clear()
        if self.history is not None:
            self.history.close()
        if self.directory is not None:
            self.directory.close()
