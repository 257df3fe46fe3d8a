"""Which files to score: discovery of a folder, file lists, labels, exact names.

:func:`discover` or :func:`read_file_list` name the files, in output order, as a compact
:class:`scorer.images.index.ImageIndex` of :class:`ImageRef`; :mod:`scorer.images.files` reads
them.

Labels follow Keras' ``image_dataset_from_directory``: an image's label is the top-level
sub-folder of IMAGES holding it (``IMAGES/cat/x.jpg`` and ``IMAGES/cat/2024/y.jpg`` are both
``cat``); files directly in IMAGES and files named by a list have no label.

File names are kept exactly: names that are not valid UTF-8 are ``str`` with surrogate escapes
(:func:`os.fsdecode`), which round-trip to the original bytes.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from scorer.errors import InputError
from scorer.images.index import ImageIndex, ImageRef, Packed, encode


def discover(root: Path) -> ImageIndex:
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
    found = _walk(base)
    if not len(found):
        raise InputError(f"image folder '{root}' holds no files (hidden files and folders, "
                         "whose names start with '.', are skipped); check the path or add images")
    return ImageIndex.from_tree(base, found)


def _walk(base: Path) -> Packed:
    """Relative POSIX paths of the non-folder entries under ``base``, each folder listed once
    (packed: no Python object per file).

    A folder reachable by several paths is listed under the first path in this order: paths
    through no link before paths through a link, then depth first in name order. So a real
    sub-folder keeps its own path and label even when a link elsewhere points at it.
    """
    found = Packed()
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
                found.append(encode("/".join((*parts, entry.name))))
    return found


def label_hint(refs: Sequence[ImageRef], root: Path) -> str | None:
    """A hint when every image is in one class folder that itself holds sub-folders."""
    labels = refs.labels() if isinstance(refs, ImageIndex) else {ref.label for ref in refs}
    if len(labels) != 1 or None in labels:
        return None
    (label,) = labels
    paths = refs.paths() if isinstance(refs, ImageIndex) else (ref.path for ref in refs)
    if not any(path.count("/") > 1 for path in paths):
        return None
    return (f"every image is under '{label}/', so they all get the label {label!r}; if its "
            f"sub-folders are the classes, pass IMAGES={Path(root) / label} instead")


def read_file_list(lines: Iterable[str | bytes], base: Path, allow_outside: bool = False
                   ) -> ImageIndex:
    """Read image paths from a file list, keeping the given order.

    One path per line; surrounding whitespace is stripped, and blank lines and lines starting
    with ``#`` are skipped. Paths are relative to ``base`` and must stay inside it (no ``..``
    out of it, no absolute path elsewhere) unless ``allow_outside``. Bytes lines keep names
    that are not UTF-8 exactly.

    Raises:
        InputError: The list names no file, a path leaves ``base``, or a line holds a NUL.
    """
    absolute_base = os.path.normpath(Path(base).absolute())
    return _checked(ImageIndex.from_list(absolute_base, _lines(lines, absolute_base,
                                                               allow_outside)))


def _lines(lines: Iterable[str | bytes], absolute_base: str, allow_outside: bool):
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
        yield text


def _checked(refs: ImageIndex) -> ImageIndex:
    if not len(refs):
        raise InputError("the file list names no images (blank lines and lines starting with '#' "
                         "are skipped); write one image path per line")
    return refs


__all__ = ["ImageIndex", "ImageRef", "discover", "label_hint", "read_file_list"]
