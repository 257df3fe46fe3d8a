"""Reading one input file: bounded reads that never block on special files, and its key.

:func:`read_file` reads a whole regular file, refusing what is not a regular file and files over a
size limit without blocking on FIFOs or devices; :func:`image_key` hashes the bytes. A file that
cannot be used raises :class:`~scorer.errors.ImageError` with a short fixed ``reason`` that
becomes its status.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

from scorer.errors import ImageError
from scorer.images.listing import ImageRef

DEFAULT_MAX_FILE_MB = 256
"""Files larger than this are failed rows (``too large``) and never read."""

REASON_UNREADABLE = "unreadable"
REASON_NOT_REGULAR = "not a regular file"
REASON_FILE_TOO_LARGE = "too large"
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def read_file(ref: ImageRef, max_bytes: int = DEFAULT_MAX_FILE_MB << 20) -> bytes:
    """Read a whole regular file of at most ``max_bytes`` bytes, never blocking on special files.

    Raises:
        ImageError: ``"unreadable"`` (missing, no permission, I/O error), ``"not a regular
            file"`` (FIFO, socket, device, folder) or ``"too large"`` (over ``max_bytes``).
    """
    try:
        fd = os.open(ref.source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket
            raise ImageError(REASON_NOT_REGULAR, f"{ref.path}: not a regular file") from error
        raise ImageError(REASON_UNREADABLE, f"{ref.path}: {error.strerror or error}") from error
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise ImageError(REASON_NOT_REGULAR, f"{ref.path} is {kind}; only regular files are read")
        if info.st_size > max_bytes:
            raise ImageError(REASON_FILE_TOO_LARGE, f"{ref.path} has {info.st_size} bytes, more "
                             f"than the limit of {max_bytes} (--max-file-size)")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 22, max_bytes + 1 - size) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise ImageError(REASON_FILE_TOO_LARGE, f"{ref.path} grew past the limit of "
                                 f"{max_bytes} bytes (--max-file-size) while being read")
        return b"".join(chunks)
    except OSError as error:
        raise ImageError(REASON_UNREADABLE, f"{ref.path}: {error.strerror or error}") from error
    finally:
        os.close(fd)


def image_key(data: bytes) -> str:
    """The SHA-256 hex digest of a file's bytes, used to match rows across runs."""
    return hashlib.sha256(data).hexdigest()
