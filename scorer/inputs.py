"""Which files to score and how to read them: discovery, file lists, bounded reads, keys.

:func:`discover` or :func:`read_file_list` name the files (:class:`ImageRef`); :func:`read_file`
reads one, refusing what is not a regular file and files over a size limit without blocking on
FIFOs or devices; :func:`image_key` hashes the bytes. A file that cannot be used raises
:class:`~scorer.errors.ImageError` with a short fixed ``reason`` that becomes its status.

Labels follow Keras' ``image_dataset_from_directory``: an image's label is the top-level
sub-folder of IMAGES holding it (``IMAGES/cat/x.jpg`` and ``IMAGES/cat/2024/y.jpg`` are both
``cat``); files directly in IMAGES and files named by a list have no label.

File names are kept exactly: names that are not valid UTF-8 are ``str`` with surrogate escapes
(:func:`os.fsdecode`), which round-trip to the original bytes.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from scorer.errors import ImageError, InputError

DEFAULT_MAX_FILE_MB = 256
"""Files larger than this are failed rows (``too large``) and never read."""

REASON_UNREADABLE = "unreadable"
REASON_NOT_REGULAR = "not a regular file"
REASON_FILE_TOO_LARGE = "too large"
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


@dataclass(frozen=True)
class ImageRef:
    """One input file.

    Attributes:
        path: POSIX path relative to the images root, or the line as written in a file list.
        source: Absolute path of the file.
        label: Top-level sub-folder of the root holding the file, or ``None``.
    """

    path: str
    source: Path
    label: str | None = None


def discover(root: Path) -> list[ImageRef]:
    """Every non-hidden entry under ``root`` that is not a folder, sorted by relative path.

    Hidden files and folders (name starting with ``.``) are skipped; everything else is kept,
    images or not, so that nothing is silently dropped (non-images, broken links, FIFOs and
    devices become failed rows). Links are followed; a folder reached by several paths (a link
    loop, two links to one folder) is listed once, by device and inode, under its path without
    links when it has one (so its images keep their own label), else the first link in name order.

    Raises:
        InputError: ``root`` does not exist, is not a folder, holds no files, or has a sub-folder
            that cannot be listed.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"image folder '{root}' does not exist; pass the folder that holds the "
                         "images (one sub-folder per class is optional)")
    if not root.is_dir():
        raise InputError(f"'{root}' is a file, expected a folder of images; pass its parent "
                         "folder, or list the files to score in a file list (--files-from)")
    base = root.absolute()
    refs = [_ref_for(base, relative) for relative in _walk(base)]
    if not refs:
        raise InputError(f"image folder '{root}' holds no files (hidden files and folders, "
                         "whose names start with '.', are skipped); check the path or add images")
    refs.sort(key=lambda ref: ref.path)
    return refs


def _walk(base: Path) -> list[str]:
    """Relative POSIX paths of the non-folder entries under ``base``, each folder listed once.

    A folder reachable by several paths is listed under the first path in this order: paths
    through no link before paths through a link, then depth first in name order. So a real
    sub-folder keeps its own path and label even when a link elsewhere points at it.
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[bool, tuple[str, ...], str]] = [(False, (), os.fspath(base))]
    while pending:
        via_link, parts, folder = heapq.heappop(pending)
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as error:
            raise InputError(f"cannot list folder '{folder}': {error.strerror}; fix its "
                             "permissions or move it out of the image folder") from error
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir(follow_symlinks=True)
                is_link = entry.is_symlink()
            except OSError:
                is_folder = False
            if is_folder:
                heapq.heappush(pending, (via_link or is_link, (*parts, entry.name), entry.path))
            else:
                found.append(PurePosixPath(*parts, entry.name).as_posix())
    return found


def _ref_for(base: Path, relative: str) -> ImageRef:
    parts = PurePosixPath(relative).parts
    return ImageRef(relative, base.joinpath(*parts), parts[0] if len(parts) > 1 else None)


def label_hint(refs: list[ImageRef], root: Path) -> str | None:
    """A hint when every image is in one class folder that itself holds sub-folders."""
    labels = {ref.label for ref in refs}
    if len(labels) != 1 or None in labels:
        return None
    (label,) = labels
    if not any(len(PurePosixPath(ref.path).parts) > 2 for ref in refs):
        return None
    return (f"every image is under '{label}/', so they all get the label {label!r}; if its "
            f"sub-folders are the classes, pass IMAGES={Path(root) / label} instead")


def read_file_list(lines: Iterable[str | bytes], base: Path, allow_outside: bool = False
                   ) -> list[ImageRef]:
    """Read image paths from a file list, keeping the given order.

    One path per line; surrounding whitespace is stripped, and blank lines and lines starting
    with ``#`` are skipped. Paths are relative to ``base`` and must stay inside it (no ``..``
    out of it, no absolute path elsewhere) unless ``allow_outside``. Bytes lines keep names
    that are not UTF-8 exactly.

    Raises:
        InputError: The list names no file, a path leaves ``base``, or a line holds a NUL.
    """
    absolute_base = os.path.normpath(Path(base).absolute())
    refs = []
    for number, line in enumerate(lines, start=1):
        text = (os.fsdecode(line) if isinstance(line, bytes) else line).strip().lstrip("\ufeff")
        if not text or text.startswith("#"):
            continue
        if "\0" in text:
            raise InputError(f"line {number} of the file list holds a NUL character, which no file "
                             "name can; write one path per line (not find -print0 output)")
        target = os.path.normpath(os.path.join(absolute_base, text))
        inside = target == absolute_base or target.startswith(absolute_base.rstrip(os.sep) + os.sep)
        if not inside and not allow_outside:
            raise InputError(f"line {number} of the file list, {text!r}, is outside the image "
                             f"folder {absolute_base}; list paths inside it, or pass "
                             "--allow-outside to read files anywhere")
        refs.append(ImageRef(path=text, source=Path(target), label=None))
    if not refs:
        raise InputError("the file list names no images (blank lines and lines starting with '#' "
                         "are skipped); write one image path per line")
    return refs


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
