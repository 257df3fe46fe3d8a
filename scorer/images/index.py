"""The list of a run's inputs, compact: about 20 bytes per input beyond its path's bytes.

:class:`ImageIndex` is a ``Sequence[ImageRef]`` that holds every relative path in one ``bytes``
buffer (UTF-8 with surrogates kept, whose byte order is the order of the strings), their offsets
and label codes in numpy arrays, and the sources (for a file list) the same way; an
:class:`ImageRef` is made only when one is asked for. Ten million inputs of 30-character paths take
about 500 MB instead of the 6 GB a list of ``ImageRef`` objects takes. A slice is a view (Ray's
shards). Equal to a list of the same refs.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

ENCODING, ERRORS = "utf-8", "surrogatepass"  # order-preserving: bytes sort as the strings do


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


def encode(text: str) -> bytes:
    return text.encode(ENCODING, ERRORS)


def decode(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def encode_escaped(text: str) -> bytes:
    """UTF-8 with surrogate escapes: a file name's own bytes."""
    return text.encode("utf-8", "surrogateescape")


class Packed:
    """Byte strings in one buffer with offsets, appended one at a time (the builder) or read."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.ends = array("q")  # 8 bytes an entry while building

    def __len__(self) -> int:
        return len(self.ends)

    def append(self, data: bytes) -> None:
        self.buffer += data
        self.ends.append(len(self.buffer))

    def freeze(self) -> tuple[bytes, np.ndarray]:
        offsets = np.zeros(len(self.ends) + 1, np.int64)
        offsets[1:] = np.frombuffer(self.ends, np.int64) if len(self.ends) else []
        self.ends = array("q")
        buffer, self.buffer = bytes(self.buffer), bytearray()
        return buffer, offsets


def sort_order(buffer: bytes, offsets: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Indices that sort the packed strings (byte order, which is the strings' order); the
    temporary array of fixed-width rows holds ``count x longest`` bytes."""
    count = len(offsets) - 1
    if count == 0:
        return np.zeros(0, np.int64)
    width = max(1, int(np.diff(offsets).max()))
    rows = np.zeros(count, dtype=f"S{width}")
    for first in range(0, count, chunk):  # Python ints for one chunk of offsets at a time
        bounds = offsets[first:first + chunk + 1].tolist()
        for k, (start, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
            rows[first + k] = buffer[start:stop]
    return np.argsort(rows, kind="stable")


class ImageIndex(Sequence):
    """See the module docstring."""

    def __init__(self, root: str, paths: bytes, offsets: np.ndarray, labels: np.ndarray,
                 label_names: Sequence[str], sources: tuple[bytes, np.ndarray] | None = None,
                 rows: slice = slice(None), listed: bool = False) -> None:
        self.root = root
        self._paths, self._offsets = paths, offsets
        self._labels, self.label_names = labels, tuple(label_names)
        self._sources = sources  # stored only for refs given as objects
        self._listed = listed  # a file list's lines: source = normpath(root / line)
        self._start, self._stop, _ = rows.indices(len(offsets) - 1)

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_tree(cls, root: Path, relative: Packed) -> ImageIndex:
        """Sorted by path, each labelled by its top-level folder (``discover``)."""
        paths, offsets = relative.freeze()
        order = sort_order(paths, offsets)
        sorted_paths = Packed()
        label_names: dict[str, int] = {}
        labels = np.full(len(order), -1, np.int32)
        for row, k in enumerate(order):
            data = paths[offsets[k]:offsets[k + 1]]
            sorted_paths.append(data)
            slash = data.find(b"/")
            if slash > 0:
                labels[row] = label_names.setdefault(decode(data[:slash]), len(label_names))
        del paths
        buffer, sorted_offsets = sorted_paths.freeze()
        return cls(os.fspath(root), buffer, sorted_offsets, labels, list(label_names))

    @classmethod
    def from_list(cls, root: str, lines: Iterable[str]) -> ImageIndex:
        """A file list's lines in the given order, without labels; each source is
        ``os.path.normpath(os.path.join(root, line))`` (``root`` absolute and normalised)."""
        paths = Packed()
        for line in lines:
            paths.append(encode(line))
        buffer, offsets = paths.freeze()
        return cls(root, buffer, offsets, np.full(len(offsets) - 1, -1, np.int32), (),
                   listed=True)

    @classmethod
    def of(cls, refs: Sequence[ImageRef]) -> ImageIndex:
        """An index of refs given as objects (a list a caller built)."""
        if isinstance(refs, ImageIndex):
            return refs
        paths, sources = Packed(), Packed()
        label_names: dict[str, int] = {}
        labels = np.full(len(refs), -1, np.int32)
        for row, ref in enumerate(refs):
            paths.append(encode(ref.path))
            sources.append(os.fsencode(ref.source))
            if ref.label is not None:
                labels[row] = label_names.setdefault(ref.label, len(label_names))
        buffer, offsets = paths.freeze()
        return cls("", buffer, offsets, labels, list(label_names), sources.freeze())

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, item):
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return ImageIndex(self.root, self._paths, self._offsets, self._labels,
                              self.label_names, self._sources,
                              slice(self._start + start, self._start + max(start, stop)),
                              self._listed)
        if item < 0:
            item += len(self)
        if not 0 <= item < len(self):
            raise IndexError("image index out of range")
        return self._ref(self._start + item)

    def _ref(self, k: int) -> ImageRef:
        path = decode(self._paths[self._offsets[k]:self._offsets[k + 1]])
        code = int(self._labels[k])
        label = self.label_names[code] if code >= 0 else None
        if self._sources is not None:
            buffer, offsets = self._sources
            source = Path(os.fsdecode(buffer[offsets[k]:offsets[k + 1]]))
        elif self._listed:
            source = Path(os.path.normpath(os.path.join(self.root, path)))
        else:
            source = Path(self.root).joinpath(*PurePosixPath(path).parts)
        return ImageRef(path, source, label)

    def digest_items(self) -> Iterator[tuple[bytes, bytes]]:
        """``(path, label)`` of each input as UTF-8 with surrogate escapes (the bytes of names
        that are not UTF-8), without making refs: what the run's input digest hashes."""
        names = [encode_escaped(name) for name in self.label_names]
        offsets = self._offsets
        for first in range(self._start, self._stop, 65536):
            last = min(self._stop, first + 65536)
            bounds = offsets[first:last + 1].tolist()
            codes = self._labels[first:last].tolist()
            for (start, stop), code in zip(zip(bounds, bounds[1:], strict=False), codes,
                                           strict=True):
                data = self._paths[start:stop]
                if b"\xed" in data:  # a surrogate: the name's own bytes, as os.fsencode gives
                    data = encode_escaped(decode(data))
                yield data, names[code] if code >= 0 else b""

    def __iter__(self) -> Iterator[ImageRef]:
        for k in range(self._start, self._stop):
            yield self._ref(k)

    def paths(self) -> Iterator[str]:
        """The relative paths, without making refs."""
        for k in range(self._start, self._stop):
            yield decode(self._paths[self._offsets[k]:self._offsets[k + 1]])

    @property
    def has_labels(self) -> bool:
        return bool((self._labels[self._start:self._stop] >= 0).any())

    def labels(self) -> set[str | None]:
        codes = np.unique(self._labels[self._start:self._stop])
        return {self.label_names[c] if c >= 0 else None for c in codes.tolist()}

    def nbytes(self) -> int:
        """What the index holds (its arrays and buffers; shared by its slices)."""
        size = len(self._paths) + self._offsets.nbytes + self._labels.nbytes
        if self._sources is not None:
            size += len(self._sources[0]) + self._sources[1].nbytes
        return size

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # a sequence that compares by value

    def __repr__(self) -> str:
        return f"ImageIndex({len(self)} inputs under {self.root!r})"

    def __reduce__(self):  # pickled (Ray's shards): the slice's rows only
        return (ImageIndex.of, (list(self),))


__all__ = ["ImageIndex", "ImageRef", "Packed", "decode", "encode", "encode_escaped", "sort_order"]
