"""Match the rows of two results files by ``path``, in memory that does not hold the paths.

Two files of the same inputs list the same paths in the same order, and then row ``i`` matches
row ``i``: :func:`match_files` finds that by reading both ``path`` datasets in blocks and keeps
nothing per row. Otherwise each path is reduced to a 16-byte BLAKE2b digest of its exact bytes
and its occurrence (a path listed k times is matched occurrence by occurrence), and the matching
is a sort of those keys: about 80 bytes a row at its peak, never a Python string per row.
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
KEY = np.dtype(f"S{DIGEST_BYTES + 8}")  # digest, then the occurrence as 8 big-endian bytes


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


def keys(path_digests: np.ndarray) -> np.ndarray:
    """``(digest, occurrence)`` keys, as bytes that sort as the pairs do."""
    order = np.argsort(path_digests, kind="stable")
    ordered = path_digests[order]
    new_group = np.ones(len(ordered), dtype=bool)
    new_group[1:] = ordered[1:] != ordered[:-1]
    positions = np.arange(len(ordered), dtype=np.int64)
    group_start = np.maximum.accumulate(np.where(new_group, positions, 0))
    occurrence = np.empty(len(ordered), dtype=">u8")
    occurrence[order] = positions - group_start
    del order, ordered, new_group, positions, group_start
    combined = np.empty((len(path_digests), DIGEST_BYTES + 8), dtype=np.uint8)
    combined[:, :DIGEST_BYTES] = path_digests.view(np.uint8).reshape(-1, DIGEST_BYTES)
    combined[:, DIGEST_BYTES:] = occurrence.view(np.uint8).reshape(-1, 8)
    return combined.view(KEY).ravel()


def match_keys(ref_keys: np.ndarray, new_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched pairs ``(ref_rows, new_rows)`` of equal keys, in reference order."""
    new_order = np.argsort(new_keys, kind="stable")
    ordered = new_keys[new_order]
    position = np.searchsorted(ordered, ref_keys)
    inside = position < len(ordered)
    found = np.zeros(len(ref_keys), dtype=bool)
    found[inside] = ordered[position[inside]] == ref_keys[inside]
    ref_rows = np.flatnonzero(found).astype(np.int64)
    return ref_rows, new_order[position[found]].astype(np.int64)


def match_rows(ref_paths: Iterable[str], new_paths: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(ref_rows, new_rows)`` of the same paths, in reference order.

    A path listed k times is matched occurrence by occurrence.
    """
    return match_keys(keys(digests(ref_paths)), keys(digests(new_paths)))


def path_blocks(file: h5py.File, block_rows: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
    rows = row_count(file)
    for start in range(0, rows, block_rows):
        yield read_dataset(file, "path", start, start + block_rows)


def same_paths(ref_file: h5py.File, new_file: h5py.File) -> bool:
    """Whether both files list the same paths in the same order (read in blocks)."""
    if row_count(ref_file) != row_count(new_file):
        return False
    return all(np.array_equal(ref, new) for ref, new in
               zip(path_blocks(ref_file), path_blocks(new_file), strict=True))


def file_digests(file: h5py.File) -> np.ndarray:
    return np.concatenate([digests(block) for block in path_blocks(file)] or
                          [np.zeros(0, dtype=f"S{DIGEST_BYTES}")])


def match_files(ref_file: h5py.File, new_file: h5py.File) -> Matching:
    """The rows of the two files that list the same path (see the module docstring)."""
    if same_paths(ref_file, new_file):
        return Matching(row_count(ref_file))
    ref_keys = keys(file_digests(ref_file))
    ref_rows, new_rows = match_keys(ref_keys, keys(file_digests(new_file)))
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
