"""Files appear whole or not at all: the one temp-file-then-rename writer of the project.

Every file the project writes (DICOM objects, manifest, report, state, configuration,
credentials) goes through :func:`atomic_writer` / :func:`atomic_write`: the data is written
to a hidden ``.<name>.partial`` beside the target, flushed to disk, given its mode, and
renamed over the target. A crash at any point leaves the old file or none, never a
truncated one; a failure removes the temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
CHUNK = 1 << 20


def partial_path(path: Path) -> Path:
    """The temporary name :func:`atomic_writer` uses for ``path``."""
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int | None = None, fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``path`` when the block ends cleanly.

    Parameters
    ----------
    path: Path
        The target; its folder is created (with :func:`folder_mode` of ``mode``).
    mode: int | None
        Permission bits of the new file (e.g. :data:`PRIVATE_FILE`); None keeps the umask's.
    fsync: bool
        Flush the data to disk before the rename (default), so a power loss cannot leave
        a renamed but empty file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=folder_mode(mode))
    tmp = partial_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, mode if mode is not None else 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)  # the umask may have narrowed os.open's mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def folder_mode(mode: int | None) -> int:
    """The mode of a folder made for files of ``mode``: searchable by whoever may read them
    (0600 -> 0700, 0644 -> 0755); 0777 (the umask's) for None."""
    return 0o777 if mode is None else mode | (mode & 0o444) >> 2


def atomic_write(path: Path, data: bytes | str, mode: int | None = None,
                 fsync: bool = True) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path, mode=mode, fsync=fsync) as handle:
        handle.write(payload)
    return Path(path)


def hash_file(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> tuple[dict[str, str], int]:
    """Hex digests of ``path`` for each of ``algorithms`` (hashlib names) and its size, from
    one read in 1 MiB chunks (OSError when it cannot be read)."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            for digest in hashes.values():
                digest.update(chunk)
            size += len(chunk)
    return {name: digest.hexdigest() for name, digest in hashes.items()}, size


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it readable by its owner only."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path
