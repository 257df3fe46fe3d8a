"""The report's access to a results file, by dataset name and in row slices.

The file is opened, checked and described by the one reader of results files
(:mod:`scorer.results.reader`: schema version, parts of a stitched file, row count, attributes,
class or output names); this module adds the report's access patterns on top.

Memory: ``[N]`` numeric columns are read whole (4-8 bytes a row); string columns are read in row
slices and turned into integer codes; ``[N, C]`` datasets are only ever read in row slices
(:meth:`ResultsReader.matrix_chunks`) or at a few rows (:meth:`ResultsReader.matrix_rows`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from scorer.contract import OUTPUT_KINDS
from scorer.errors import OutputError
from scorer.report.errors import ResultsFileError
from scorer.results.reader import default_names, open_results, read_attrs, row_count

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
        class_names: ``C`` names of the classes, labels or outputs (the file's coordinate), or
            ``()`` when the model names none.
        images_root: Folder the ``path`` column is relative to (``""`` if unknown).
        schema_version: The file's schema version.
        rows: ``N``, completed rows (``rows_complete`` of a schema-1 partial).
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


class ResultsReader:
    """Read-only access to a results file by dataset name.

    Use as a context manager: ``with ResultsReader(path) as reader: ...``.

    Raises:
        ResultsFileError: The file is missing, not an mcd-score results file (see
            :func:`scorer.results.reader.open_results`), or lacks ``path``/``status``.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        try:
            self._file = open_results(path)
        except OutputError as error:
            raise ResultsFileError(str(error)) from error
        try:
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
        attrs = read_attrs(file)
        kind = _text(attrs["kind"]) if "kind" in attrs else self._guess_kind(datasets)
        if kind not in OUTPUT_KINDS:
            raise ResultsFileError(f"{path} has kind {kind!r}; the report knows "
                                   f"{', '.join(OUTPUT_KINDS)}")
        num_outputs = int(attrs["num_outputs"]) if "num_outputs" in attrs else (
            int(file["mean"].shape[1]) if "mean" in datasets and file["mean"].ndim == 2 else 0)
        names = [str(name) for name in attrs["class_names"]]
        metadata = attrs.get("model_metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        head = metadata.get("head")
        if names == default_names(num_outputs) and not metadata.get("class_names"):
            names = []  # the model names none: the file's coordinate is just 0 .. C-1
        return ResultsInfo(
            path=path, kind=kind, num_outputs=num_outputs,
            passes=int(attrs["passes"]) if "passes" in attrs else None,
            class_names=tuple(names),
            images_root=_text(attrs.get("images_root", "")),
            schema_version=int(attrs["schema_version"]), rows=row_count(file),
            head=head if isinstance(head, str) else None, datasets=datasets)

    @staticmethod
    def _guess_kind(datasets: frozenset[str]) -> str:
        if "predicted_class" in datasets:
            return "probabilities"
        return "multilabel" if "label_mutual_information" in datasets else "values"

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
        yield from matrix_chunks(self._file, self.info, names, chunk_bytes)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> ResultsReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PredictionsReader:
    """The report's access (as :class:`ResultsReader`) to results held in memory: the datasets of
    :class:`scorer.predictions.Predictions`, or any mapping of them with its ``header``."""

    def __init__(self, predictions) -> None:
        self._data = predictions
        header = predictions.header
        metadata = header.attrs.get("model_metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        names = list(header.names())
        if names == default_names(header.num_outputs) and not metadata.get("class_names"):
            names = []
        self.info = ResultsInfo(
            path=Path("(in memory)"), kind=header.kind, num_outputs=header.num_outputs,
            passes=header.passes, class_names=tuple(names), images_root="",
            schema_version=None, rows=len(predictions["path"]),
            head=metadata.get("head") if isinstance(metadata.get("head"), str) else None,
            datasets=frozenset(predictions))

    def has(self, name: str) -> bool:
        return name in self.info.datasets

    def column(self, name: str, dtype: str = "float32") -> np.ndarray:
        return np.asarray(self._data[name], dtype=dtype)

    def categories(self, name: str) -> tuple[np.ndarray, list[str]]:
        index: dict[str, int] = {}
        codes = np.fromiter((index.setdefault(str(text), len(index)) for text in self._data[name]),
                            dtype=np.int32, count=self.info.rows)
        return codes, list(index)  # in order of first appearance, as the file reader gives them

    def strings_at(self, name: str, rows: Sequence[int]) -> list[str]:
        return [str(self._data[name][int(row)]) for row in rows]

    def matrix_rows(self, name: str, rows: Sequence[int]) -> np.ndarray:
        values = np.asarray(self._data[name], dtype=np.float64)
        return values[np.asarray(rows, dtype=np.int64)].reshape(len(rows), -1)

    def matrix_chunks(self, names: Sequence[str],
                      chunk_bytes: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        yield from matrix_chunks(self._data, self.info, names, chunk_bytes)

    def close(self) -> None:
        """Nothing to close: the arrays stay the caller's."""

    def __enter__(self) -> PredictionsReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def matrix_chunks(source, info: ResultsInfo, names: Sequence[str], chunk_bytes: int | None
                  ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Row slices of the ``[N, C]`` datasets ``names`` of ``source`` (an HDF5 file or a mapping
    of arrays) as float64, about ``chunk_bytes`` per dataset, at least one row."""
    width = max(1, info.num_outputs)
    step = max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (8 * width))
    for start in range(0, info.rows, step):
        stop = min(start + step, info.rows)
        yield start, {name: np.asarray(source[name][start:stop], dtype=np.float64)
                      .reshape(stop - start, -1) for name in names}
