"""Append-only segment files: rows of a run in progress, each file committed by an atomic rename.

A segment holds consecutive result rows ``[start, stop)`` as an uncompressed ``.npz`` (a zip of
``.npy`` arrays, each with a CRC-32 that is checked when it is read). It is written to a temporary
name, flushed to disk with ``fsync``, then renamed to ``<start>-<stop>.npz`` and the folder entry
fsynced (:func:`scorer.atomic.atomic_write`). A file is never written again after its
rename, so a process killed at any instant (SIGKILL, power loss, full disk) can only lose the
segment it was writing: every committed row survives. This is the append-only, commit-by-rename
design of SQLite's journal-less "atomic commit" and of git's object store.

String columns are stored as their bytes (UTF-8, with ``surrogateescape`` so that file names that
are not valid UTF-8 round-trip byte for byte) plus offsets.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scorer.atomic import atomic_write
from scorer.errors import OutputError, OutputWriteError

SEGMENT_NAME = re.compile(r"^(\d{12})-(\d{12})\.npz$")
BUFFER_BYTES = 8 << 20
"""Appended rows are committed as a segment once the buffer holds this much (or on a timer)."""
FLUSH_SECONDS = 5.0
"""Longest time a row waits in memory before it is committed: what a SIGKILL can cost."""

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class Segment:
    """A committed segment file holding rows ``[start, stop)``."""

    start: int
    stop: int
    path: Path

    def __len__(self) -> int:
        return self.stop - self.start


def write_error(path: Path, error: OSError) -> OutputWriteError:
    """The one-line error for a failed write (full disk, quota, I/O error)."""
    reason = error.strerror or str(error)
    return OutputWriteError(f"cannot write {path}: {reason}; the rows committed so far are kept: "
                            "free space (or fix the file system) and run again with --resume")


def encode_strings(values: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (uint8 concatenated bytes, int64 offsets ``[n + 1]``), byte-exact."""
    encoded = [value.encode("utf-8", "surrogateescape") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def decode_strings(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Inverse of :func:`encode_strings`."""
    raw = data.tobytes()
    return [raw[offsets[i]:offsets[i + 1]].decode("utf-8", "surrogateescape")
            for i in range(len(offsets) - 1)]


def segment_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"{start:012d}-{stop:012d}.npz"


def write_segment(folder: Path, start: int, columns: Mapping[str, np.ndarray | list[str]]) -> Segment:
    """Commit rows ``[start, start + n)``; string columns are lists of ``str``."""
    arrays: dict[str, np.ndarray] = {}
    count = None
    for name, values in columns.items():
        if isinstance(values, list):
            arrays[f"{name}.bytes"], arrays[f"{name}.offsets"] = encode_strings(values)
        else:
            arrays[name] = np.ascontiguousarray(values)
        count = len(values) if count is None else count
    path = segment_path(folder, start, start + (count or 0))
    try:
        atomic_write(path, lambda stream: np.savez(stream, **arrays))
    except OSError as error:
        raise write_error(path, error) from error
    return Segment(start, start + (count or 0), path)


def read_segment(segment: Segment, names: Iterable[str] | None = None) -> Columns:
    """The columns of a committed segment (all, or ``names``); strings as object arrays.

    Raises:
        OutputError: The file is damaged (bad zip, CRC mismatch) or lacks a column.
    """
    try:
        with np.load(segment.path, allow_pickle=False) as archive:
            stored = {key.split(".")[0] for key in archive.files}
            wanted = stored if names is None else set(names)
            columns: Columns = {}
            for name in sorted(wanted):
                if f"{name}.bytes" in archive.files:
                    columns[name] = np.array(
                        decode_strings(archive[f"{name}.bytes"], archive[f"{name}.offsets"]),
                        dtype=object)
                else:
                    columns[name] = archive[name]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise OutputError(f"segment {segment.path} is damaged ({type(error).__name__}: {error}); "
                          "delete it and run again with --resume to rescore its rows") from error
    return columns


def committed(folder: Path) -> list[Segment]:
    """The committed segments of ``folder`` forming a contiguous run of rows from row 0.

    Leftover temporary files of a killed writer are deleted; so are segments after a gap (a
    run writes in order, so there are none unless files were removed by hand).
    """
    if not folder.is_dir():
        return []
    found = []
    for entry in os.scandir(folder):
        match = SEGMENT_NAME.match(entry.name)
        if match:
            found.append(Segment(int(match[1]), int(match[2]), Path(entry.path)))
        elif entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    found.sort(key=lambda s: s.start)
    kept, row = [], 0
    for segment in found:
        if segment.start != row:
            with contextlib.suppress(OSError):
                segment.path.unlink()
            continue
        kept.append(segment)
        row = segment.stop
    return kept


def rows_in(segments: list[Segment]) -> int:
    return segments[-1].stop if segments else 0


def iter_columns(segments: list[Segment], names: Iterable[str] | None = None) -> Iterator[Columns]:
    for segment in segments:
        yield read_segment(segment, names)


class SegmentWriter:
    """Buffers appended rows and commits them as segments of ``folder``.

    Rows are committed when the buffer reaches :data:`BUFFER_BYTES`, ``flush_seconds`` after the
    oldest buffered row, and on :meth:`flush`.
    """

    def __init__(self, folder: Path, start: int, flush_seconds: float = FLUSH_SECONDS,
                 buffer_bytes: int = BUFFER_BYTES) -> None:
        self.folder = folder
        self.rows_committed = start
        self._flush_seconds = flush_seconds
        self._buffer_bytes = buffer_bytes
        self._buffer: list[Mapping[str, np.ndarray | list[str]]] = []
        self._rows = 0
        self._bytes = 0
        self._since = 0.0

    @property
    def rows_done(self) -> int:
        return self.rows_committed + self._rows

    def append(self, columns: Mapping[str, np.ndarray | list[str]], rows: int) -> None:
        if rows == 0:
            return
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer.append(columns)
        self._rows += rows
        self._bytes += sum(v.nbytes if isinstance(v, np.ndarray) else 64 * len(v)
                           for v in columns.values())
        if (self._bytes >= self._buffer_bytes
                or time.monotonic() - self._since >= self._flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows as one segment (no-op when the buffer is empty)."""
        if not self._buffer:
            return
        merged: dict[str, np.ndarray | list[str]] = {}
        for name, first in self._buffer[0].items():
            parts = [columns[name] for columns in self._buffer]
            if isinstance(first, list):
                merged[name] = [value for part in parts for value in part]
            else:
                merged[name] = np.concatenate(parts) if len(parts) > 1 else first
        segment = write_segment(self.folder, self.rows_committed, merged)
        self.rows_committed = segment.stop
        self._buffer, self._rows, self._bytes = [], 0, 0
