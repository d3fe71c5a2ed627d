"""What a room keeps between runs, opened before it starts: its data directory (locked to this
process), its history, its TLS certificate and its personal invites.

`serve` and `up` open it with `RoomData.open` and close it after the room stopped. Every way
this can fail is a `HostError` with one line for the host; nothing is overwritten. With
`--ephemeral` nothing touches the disk: no history beyond what the room holds in memory (a
resume reaches as far back as that), bans and invites for this run, the certificate new.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..server.history import HistoryError, HistoryStore
from ..server.history_settings import HistorySettings, load_history_settings
from ..server.limits import LimitsError
from ..server.listeners import ChatServer
from . import invite_store
from .certificate import CertificateError, RoomCertificate, room_certificate
from .datadir import DataDir, DataDirError, default_data_dir
from .process import HostError


@dataclass
class RoomData:
    """A room's data directory (None: ephemeral), history and certificate."""

    directory: DataDir | None
    history: HistoryStore | None
    certificate: RoomCertificate
    settings: HistorySettings

    @classmethod
    def open(
        cls,
        room: str,
        *,
        data_dir: Path | None = None,
        ephemeral: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        config: Path | None = None,
    ) -> RoomData:
        """Open (or make) everything the room keeps. Raises HostError."""
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
        return cls(directory, history, certificate, settings)

    def serve(self, server: ChatServer) -> None:
        """Hand `server` what it keeps across runs: personal invites (saved on every change)."""
        if self.directory is None:
            return
        try:
            invite_store.keep(server.ctx.invites, self.directory.path)
        except invite_store.InviteStoreError as exc:
            raise HostError(str(exc)) from None

    def close(self) -> None:
        """After the room stopped: close the history, then let the directory go."""
        if self.history is not None:
            self.history.close()
        if self.directory is not None:
            self.directory.close()
