"""The one way this tool writes a file: a temporary sibling, fsync, rename over the target.

Whoever reads the target sees the old file or the new one, never a part of either, whatever
happens during the write (kill -9, a full disk, power loss): SQLite's "atomic commit" by
rename. Used for committed row segments, the run's ``job.json``, exported models, the
report's pages and ``table``'s files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, content: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``content`` (bytes, or a function that writes to a binary stream) to ``path``.

    The temporary file has a unique name in ``path``'s folder and the permissions of a new file
    (``0666`` less the umask); after the rename the folder entry is flushed too.

    Raises:
        OSError: The write, fsync or rename failed; the temporary file is removed and ``path`` is
            as it was.
    """
    with _sibling(Path(path)) as (handle, _), os.fdopen(handle, "wb") as stream:
        if isinstance(content, bytes | bytearray | memoryview):
            stream.write(content)
        else:
            content(stream)
        stream.flush()
        os.fsync(stream.fileno())


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` for a writer that opens files by name (pyarrow, a file
    written in several steps): flushed and renamed over ``path`` when the block ends, removed if it
    raises, so ``path`` holds the old file or the whole new one. A ``path`` that exists and is not
    a regular file (``/dev/null``, a named pipe) is written in place."""
    path = Path(path)
    if path.exists() and not path.is_file():
        yield path
        return
    with _sibling(path) as (handle, temporary):
        os.close(handle)
        yield Path(temporary)
        fsync_path(Path(temporary))


@contextlib.contextmanager
def _sibling(path: Path) -> Iterator[tuple[int, str]]:
    """A new temporary file beside ``path`` (its open descriptor and name): given the
    permissions of a new file and renamed over ``path`` when the block ends, removed if it raises;
    then the folder entry is flushed."""
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        yield handle, temporary
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_path(folder, directory=True)


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file or a folder entry to disk where the platform allows it."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
