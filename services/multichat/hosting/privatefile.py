"""Files only the host may read, replaced whole: the room's key, its invites.

A crash or a full disk mid-write must never leave half a key or half a list of invites: the
data goes to a temporary file beside the real one, is flushed to the disk, then renamed over
it (a rename is atomic on POSIX and on Windows' NTFS).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Readable and writable by the user alone: keys and invite digests are nobody else's.
PRIVATE_MODE = 0o600


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, mode 0600, all or nothing. Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # A temporary file left by a crash keeps its old mode through O_TRUNC: start afresh.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            # Without it, a power cut soon after the rename can leave an empty file on some
            # filesystems: the rename reached the disk before the data did.
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); where directories cannot be opened, skip it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
