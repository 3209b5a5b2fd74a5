"""File helpers the zoo's data, hub and release code share: content hashes, a write that readers
never see half done, and a file-name-safe slug."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def process_umask() -> int:
    """The process's umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_to_others(path: str | os.PathLike) -> None:
    """Gives a file (or folder) made by ``tempfile`` the permissions a plain ``open`` (or ``mkdir``)
    would have given it: tempfile makes them private (0600 / 0700), which would keep a shared
    cache or store unreadable to the users it is shared with."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~process_umask())


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle whose contents appear at ``path`` only once the block ends without error:
    a reader sees the old file or the whole new one, and an error or interruption leaves nothing.

    A unique temp name (``.<name>.*.tmp``) in the same directory: concurrent writers never share a
    temp file, and ``os.replace`` stays atomic because it does not cross file systems; fsync first,
    so a crash cannot leave a complete-looking name over incomplete bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        open_to_others(tmp)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(data)


def slug(text: str) -> str:
    """``text`` reduced to a short file-name-safe token (``corpus`` if nothing is left)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:40] or "corpus"
