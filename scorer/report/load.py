"""Read an mcd-score results file for the report: the only module of the report that touches HDF5.

Datasets are looked up by name at the file root, so the reader works with any schema version that
keeps these names: ``path``, ``status``, optional ``reason`` and ``label``, ``mean``/``std``
``[N, C]``, and the per-kind ``[N]`` metrics. Root attributes read: ``kind``, ``num_outputs``,
``passes``, ``class_names`` (a JSON list, a string array, or a 1-D string dataset ``class``),
``images_root``, ``schema_version``, ``rows_complete`` (only rows below it are read) and
``model_metadata`` (for the head type).

Memory: ``[N]`` numeric columns are read whole (4-8 bytes a row); string columns are read in row
slices and turned into integer codes; ``[N, C]`` datasets are only ever read in row slices
(:meth:`ResultsReader.matrix_chunks`) or at a few rows (:meth:`ResultsReader.matrix_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from scorer.report.errors import ResultsFileError
from scorer.sources import check_sources

KINDS = ("probabilities", "multilabel", "values")
CHUNK_BYTES = 8 << 20
"""Target size of one row slice of an ``[N, C]`` dataset read by :meth:`matrix_chunks`."""
STRING_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class ResultsInfo:
    """What the report needs to know about a results file.

    Attributes:
        path: The results file.
        kind: ``"probabilities"``, ``"multilabel"`` or ``"values"``.
        num_outputs: ``C``, the width of ``mean`` and ``std``.
        passes: ``T``, stochastic passes per image, or ``None`` if not recorded.
        class_names: ``C`` names, or ``()`` when the file has none.
        images_root: Folder the ``path`` column is relative to (``""`` if unknown).
        schema_version: The file's schema version, or ``None``.
        rows: ``N``, completed rows (``rows_complete`` when present).
        head: ``"softmax"``, ``"sigmoid"``, ``"linear"`` or ``None`` (from ``model_metadata``).
        datasets: Names of the datasets at the file root.
    """

    path: Path
    kind: str
    num_outputs: int
    passes: int | None
    class_names: tuple[str, ...]
    images_root: str
    schema_version: int | None
    rows: int
    head: str | None
    datasets: frozenset[str]

    @property
    def binary_sigmoid(self) -> bool:
        """A one-unit sigmoid head stored as two classes ``[1 - p, p]``."""
        return self.kind == "probabilities" and self.num_outputs == 2 and self.head == "sigmoid"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _names_from_attr(value: object) -> tuple[str, ...]:
    """Class names from a JSON string, a string array or a list; ``()`` when empty or unreadable."""
    if value is None:
        return ()
    if isinstance(value, bytes | str):
        text = _text(value).strip()
        if not text:
            return ()
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            return tuple(name.strip() for name in text.split(","))
        return tuple(_text(v) for v in decoded) if isinstance(decoded, list) else ()
    if isinstance(value, np.ndarray | list | tuple):
        return tuple(_text(v) for v in np.asarray(value).ravel().tolist())
    return ()


class ResultsReader:
    """Read-only access to a results file by dataset name.

    Use as a context manager: ``with ResultsReader(path) as reader: ...``.

    Raises:
        ResultsFileError: The file is missing, not HDF5, or lacks ``path``/``status``.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ResultsFileError(f"results file {path} does not exist; give the .h5 file that "
                                   "mcd-score wrote")
        try:
            self._file = h5py.File(path, "r")
        except OSError as err:
            raise ResultsFileError(f"{path} is not a readable HDF5 file ({err}); expected an "
                                   "mcd-score results file") from err
        try:
            check_sources(self._file, path)  # a stitched file with a missing part reads as blanks
            self.info = self._read_info(path)
        except Exception:
            self._file.close()
            raise

    def _read_info(self, path: Path) -> ResultsInfo:
        file = self._file
        datasets = frozenset(name for name in file if isinstance(file[name], h5py.Dataset))
        missing = [name for name in ("path", "status") if name not in datasets]
        if missing:
            raise ResultsFileError(
                f"{path} lacks the dataset(s) {', '.join(missing)} that every mcd-score results "
                f"file has (found: {', '.join(sorted(datasets)) or 'none'}); is it a results file?")
        attrs = file.attrs
        length = int(file["path"].shape[0])
        rows = min(length, int(attrs["rows_complete"])) if "rows_complete" in attrs else length
        kind = _text(attrs["kind"]) if "kind" in attrs else self._guess_kind(datasets)
        if kind not in KINDS:
            raise ResultsFileError(f"{path} has kind {kind!r}; the report knows {', '.join(KINDS)}")
        num_outputs = int(attrs["num_outputs"]) if "num_outputs" in attrs else (
            int(file["mean"].shape[1]) if "mean" in datasets and file["mean"].ndim == 2 else 0)
        names = _names_from_attr(attrs.get("class_names"))
        if not names and "class" in datasets and h5py.check_string_dtype(file["class"].dtype):
            names = tuple(file["class"].asstr()[...].tolist())
        if len(names) != num_outputs:
            names = ()
        return ResultsInfo(
            path=path, kind=kind, num_outputs=num_outputs,
            passes=int(attrs["passes"]) if "passes" in attrs else None,
            class_names=names,
            images_root=_text(attrs.get("images_root", "")),
            schema_version=int(attrs["schema_version"]) if "schema_version" in attrs else None,
            rows=rows, head=self._head(), datasets=datasets)

    @staticmethod
    def _guess_kind(datasets: frozenset[str]) -> str:
        if "predicted_class" in datasets:
            return "probabilities"
        return "multilabel" if "label_mutual_information" in datasets else "values"

    def _head(self) -> str | None:
        raw = self._file.attrs.get("model_metadata")
        if raw is None:
            return None
        try:
            meta = json.loads(_text(raw))
        except json.JSONDecodeError:
            return None
        head = meta.get("head") if isinstance(meta, dict) else None
        return head if isinstance(head, str) else None

    def has(self, name: str) -> bool:
        """Whether the dataset ``name`` exists at the file root."""
        return name in self.info.datasets

    def column(self, name: str, dtype: str = "float32") -> np.ndarray:
        """A numeric ``[N]`` dataset, the first ``N`` rows, as ``dtype``."""
        return np.asarray(self._file[name][: self.info.rows], dtype=dtype)

    def categories(self, name: str) -> tuple[np.ndarray, list[str]]:
        """A string ``[N]`` dataset as integer codes into a list of distinct values.

        Read in row slices, so 10**6 rows never exist as Python strings at once.

        Returns:
            ``codes`` int32 ``[N]`` and ``values`` with ``values[codes[i]]`` the text of row ``i``.
        """
        dataset = self._file[name]
        codes = np.empty(self.info.rows, dtype=np.int32)
        index: dict[str, int] = {}
        for start in range(0, self.info.rows, STRING_CHUNK_ROWS):
            stop = min(start + STRING_CHUNK_ROWS, self.info.rows)
            texts = self._strings(dataset, slice(start, stop))
            codes[start:stop] = [index.setdefault(text, len(index)) for text in texts]
        return codes, list(index)

    def strings_at(self, name: str, rows: Sequence[int]) -> list[str]:
        """The text of a string dataset at a few rows (any order)."""
        if len(rows) == 0:
            return []
        order = np.unique(np.asarray(rows, dtype=np.int64))
        texts = dict(zip(order.tolist(), self._strings(self._file[name], order), strict=True))
        return [texts[int(row)] for row in rows]

    @staticmethod
    def _strings(dataset: h5py.Dataset, selection: slice | np.ndarray) -> list[str]:
        if h5py.check_string_dtype(dataset.dtype) is not None:
            return list(dataset.asstr()[selection])
        return [_text(v) for v in dataset[selection]]

    def matrix_rows(self, name: str, rows: Sequence[int]) -> np.ndarray:
        """An ``[N, C]`` dataset at a few rows: ``[len(rows), C]`` float64, in the order given."""
        if len(rows) == 0:
            return np.zeros((0, self.info.num_outputs))
        order, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        block = np.asarray(self._file[name][order], dtype=np.float64)
        return block.reshape(len(order), -1)[inverse]

    def matrix_chunks(self, names: Sequence[str],
                      chunk_bytes: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Row slices of ``[N, C]`` datasets, read together: ``(start, {name: [n, C] float64})``.

        Slices hold about ``chunk_bytes`` (default :data:`CHUNK_BYTES`) per dataset in float64, at
        least one row.
        """
        width = max(1, self.info.num_outputs)
        step = max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (8 * width))
        for start in range(0, self.info.rows, step):
            stop = min(start + step, self.info.rows)
            yield start, {name: np.asarray(self._file[name][start:stop], dtype=np.float64)
                          .reshape(stop - start, -1) for name in names}

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> ResultsReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
