"""Match the rows of two results files by ``path``, in memory that does not hold the paths.

Two files of the same inputs list the same paths in the same order, and then row ``i`` matches
row ``i``: :func:`match_files` finds that by reading both ``path`` datasets in blocks and keeps
nothing per row. Otherwise each path is reduced to a 16-byte BLAKE2b digest of its exact bytes
(a path listed k times is matched occurrence by occurrence), and the matching is a sort of those
digests: about 100 bytes a row at its peak, never a Python string per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import h5py
import numpy as np

from scorer.results.reader import read_dataset, row_count

BLOCK_ROWS = 1 << 14
DIGEST_BYTES = 16


@dataclass(frozen=True)
class Matching:
    """Which rows of the reference match which rows of the new file.

    ``ref_rows`` (ascending) and ``new_rows`` are the matched pairs; both are ``None`` when the
    files list the same paths in the same order (row ``i`` matches row ``i``, ``count`` rows).
    """

    count: int
    ref_rows: np.ndarray | None = None
    new_rows: np.ndarray | None = None

    @property
    def aligned(self) -> bool:
        return self.ref_rows is None

    def blocks(self, rows_ref: int, block_rows: int = BLOCK_ROWS
               ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """``(start, stop, ref_rows, new_rows)`` per block ``[start, stop)`` of reference rows:
        the matched pairs whose reference row lies in the block, in reference order."""
        for start in range(0, rows_ref, block_rows):
            stop = min(rows_ref, start + block_rows)
            if self.aligned:
                rows = np.arange(start, min(stop, self.count), dtype=np.int64)
                yield start, stop, rows, rows
                continue
            first, last = np.searchsorted(self.ref_rows, [start, stop])
            yield start, stop, self.ref_rows[first:last], self.new_rows[first:last]


def digests(paths: Iterable[str]) -> np.ndarray:
    """``S16`` BLAKE2b digests of each path's exact bytes (``surrogateescape``)."""
    joined = b"".join(hashlib.blake2b(path.encode("utf-8", "surrogateescape"),
                                      digest_size=DIGEST_BYTES).digest() for path in paths)
    return np.frombuffer(joined, dtype=f"S{DIGEST_BYTES}")


def occurrences(ordered: np.ndarray) -> np.ndarray:
    """For a sorted array: each entry's index among the equal entries before it (0, 1, ...)."""
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    if first.all():
        return np.zeros(len(ordered), dtype=np.int64)
    index = np.arange(len(ordered), dtype=np.int64)
    start = np.where(first, index, 0)
    del first
    np.maximum.accumulate(start, out=start)
    index -= start
    return index


def match_digests(ref: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched pairs ``(ref_rows, new_rows)`` of equal digests, in reference order; the k-th
    occurrence of a digest in one matches its k-th occurrence in the other.

    About 100 bytes a row at the peak (96 measured): both sorted (stable, so occurrences keep
    their row order), each reference digest looked up among the new ones.
    """
    ref_order = np.argsort(ref, kind="stable")
    ref_sorted = ref[ref_order]
    new_order = np.argsort(new, kind="stable")
    new_sorted = new[new_order]
    first = np.searchsorted(new_sorted, ref_sorted, side="left")
    count = np.searchsorted(new_sorted, ref_sorted, side="right")
    count -= first
    del new_sorted
    occurrence = occurrences(ref_sorted)
    del ref_sorted
    found = occurrence < count
    del count
    first += occurrence
    del occurrence
    new_for_ref = np.full(len(ref), -1, dtype=np.int64)
    new_for_ref[ref_order[found]] = new_order[first[found]]
    del ref_order, new_order, first, found
    ref_rows = np.flatnonzero(new_for_ref >= 0).astype(np.int64)
    return ref_rows, new_for_ref[ref_rows]


def match_rows(ref_paths: Iterable[str], new_paths: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(ref_rows, new_rows)`` of the same paths, in reference order.

    A path listed k times is matched occurrence by occurrence.
    """
    return match_digests(digests(ref_paths), digests(new_paths))


def blocks_of(file: h5py.File, name: str = "path",
              block_rows: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
    """The rows of dataset ``name`` in blocks of ``block_rows`` (strings as ``str``)."""
    rows = row_count(file)
    for start in range(0, rows, block_rows):
        yield read_dataset(file, name, start, start + block_rows)


def same_paths(ref_file: h5py.File, new_file: h5py.File) -> bool:
    """Whether both files list the same paths in the same order (read in blocks)."""
    if row_count(ref_file) != row_count(new_file):
        return False
    return all(np.array_equal(ref, new) for ref, new in
               zip(blocks_of(ref_file), blocks_of(new_file), strict=True))


def file_digests(file: h5py.File, name: str = "path") -> np.ndarray:
    """The digests of every value of the string dataset ``name`` of ``file``, read in blocks."""
    found = np.empty(row_count(file), dtype=f"S{DIGEST_BYTES}")
    start = 0
    for block in blocks_of(file, name):
        found[start:start + len(block)] = digests(block)
        start += len(block)
    return found


def match_files(ref_file: h5py.File, new_file: h5py.File) -> Matching:
    """The rows of the two files that list the same path (see the module docstring)."""
    if same_paths(ref_file, new_file):
        return Matching(row_count(ref_file))
    ref_rows, new_rows = match_digests(file_digests(ref_file), file_digests(new_file))
    return Matching(len(ref_rows), ref_rows, new_rows)


def unmatched_paths(file: h5py.File, matched: np.ndarray | None) -> list[str]:
    """The paths of ``file`` whose rows are not in ``matched`` (``None``: all matched)."""
    if matched is None:
        return []
    rows = row_count(file)
    unmatched = np.ones(rows, dtype=bool)
    unmatched[matched] = False
    found: list[str] = []
    for start in range(0, rows, BLOCK_ROWS):
        block = unmatched[start:start + BLOCK_ROWS]
        if block.any():
            found += [str(p) for p in read_dataset(file, "path", start, start + BLOCK_ROWS)[block]]
    return found
