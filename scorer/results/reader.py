"""Read results files (schema 2, and schema 1 from mcd-score 0.1) as arrays or a pandas table.

:func:`read_results` is the public reader: one row per image, one column per scalar and one per
class for the per-class datasets (``mean_<class>``, ``std_<class>``...), strings as ``str``.
:func:`read_arrays` returns the datasets themselves. Both read only the completed rows of a
schema-1 partial and restore file names that are not valid UTF-8 byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from scorer.errors import OutputError, ScorerUsageError
from scorer.results import schema
from scorer.results.stitch import check_sources
from scorer.results.writer import RAW_PATHS

DEFAULT_CHUNK_ROWS = 65536
SCALAR_ORDER = ("path", "label", "status", "reason", "predicted_class", "predicted_name")


def open_results(path: Path) -> h5py.File:
    """Open a results file read-only, checking it is a complete mcd-score file of a known schema.

    Raises:
        OutputError: The file is missing, not HDF5, not an mcd-score results file, of a newer
            schema, or a stitched file whose parts are missing.
    """
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"results file {path} does not exist; check the path")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise OutputError(f"{path} is not a readable HDF5 file ({err}); "
                          "expected an mcd-score results file") from err
    try:
        version = file.attrs.get("schema_version")
        if version is None:
            raise OutputError(f"{path} is not an mcd-score results file: it has no "
                              "'schema_version' root attribute")
        if int(version) > schema.SCHEMA_VERSION:
            raise OutputError(f"{path} has schema version {int(version)}, this mcd-score reads "
                              f"up to {schema.SCHEMA_VERSION}; upgrade mcd-score")
        check_sources(file, path)
    except BaseException:
        file.close()
        raise
    return file


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return value


def read_attrs(file: h5py.File) -> dict[str, Any]:
    """Root attributes as plain Python values, JSON attributes decoded, plus ``class_names``."""
    json_names = set(_json(_plain(file.attrs.get("json_attrs", "[]")), []))
    attrs: dict[str, Any] = {}
    for name, value in file.attrs.items():
        if name != "json_attrs":
            value = _plain(value)
            attrs[name] = _json(value, value) if name in json_names else value
    attrs["class_names"] = class_names(file, attrs)
    return attrs


def _json(text: Any, otherwise: Any) -> Any:
    """``text`` decoded as JSON, or ``otherwise`` when it is not (a damaged attribute is kept as
    it is rather than making the file unreadable)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return otherwise


def class_names(file: h5py.File, attrs: dict[str, Any] | None = None) -> list[str]:
    """The names along the class (or output) dimension: the coordinate, else schema 1's list."""
    attrs = attrs if attrs is not None else {}
    kind = _plain(file.attrs.get("kind", "probabilities"))
    dim = schema.class_dim(kind)
    if dim in file and isinstance(file[dim], h5py.Dataset):
        return file[dim].asstr()[()].tolist()
    names = attrs.get("class_names")
    names = list(names) if isinstance(names, list | tuple) else []
    count = int(file.attrs.get("num_outputs", len(names)))
    return names if len(names) == count else default_names(count)


def default_names(count: int) -> list[str]:
    """The class coordinate of a file whose model names no classes: ``"0"`` .. ``"C-1"``."""
    return [str(i) for i in range(count)]


def row_count(file: h5py.File) -> int:
    """Rows of the file (schema 1 partials: only the flushed ``rows_complete`` rows)."""
    total = file["path"].shape[0]
    return min(total, int(file.attrs.get("rows_complete", total)))


def read_dataset(file: h5py.File, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``[start, stop)`` of one dataset; strings as ``str`` (paths byte-exact)."""
    rows = row_count(file)
    stop = rows if stop is None else min(stop, rows)
    if name == "reason" and "reason" not in file:  # schema 1
        status = read_dataset(file, "status", start, stop)
        return np.array(["" if s == schema.STATUS_OK else s for s in status], dtype=object)
    if name == NORMALIZED_ENTROPY and name not in file and _derives_normalized_entropy(file):
        entropy = file["predictive_entropy"][start:stop]
        return schema.normalized_entropy(entropy, file["mean"].shape[1]).astype(entropy.dtype)
    dataset = file[name]
    if h5py.check_string_dtype(dataset.dtype) is None:
        return dataset[start:stop]
    values = np.array(dataset.asstr()[start:stop], dtype=object)
    if name == "path" and RAW_PATHS in file:
        raw = file[RAW_PATHS].asstr()[start:stop]
        for i, text in enumerate(raw):
            if text:
                values[i] = exact_path(text)
    return values


def exact_path(path_bytes_hex: str) -> str:
    """A ``path_bytes_hex`` entry as the path it records (bytes that are not UTF-8 as
    surrogates, as ``os.fsdecode`` gives them): the name to open the file by."""
    return bytes.fromhex(path_bytes_hex).decode("utf-8", "surrogateescape")


def data_names(file: h5py.File) -> list[str]:
    """The row datasets of the file (not dimension coordinates), in schema order."""
    order = {spec.name: i for i, spec in enumerate(schema.SCHEMA)}
    names = [n for n in file if isinstance(file[n], h5py.Dataset) and n in order]
    if "status" in names and "reason" not in names:
        names.append("reason")
    if NORMALIZED_ENTROPY not in names and _derives_normalized_entropy(file):
        names.append(NORMALIZED_ENTROPY)
    return sorted(names, key=lambda n: order[n])


NORMALIZED_ENTROPY = "normalized_entropy"


def _derives_normalized_entropy(file: h5py.File) -> bool:
    """Whether ``normalized_entropy`` is read as ``predictive_entropy / log C``: files of
    probabilities written before it was stored (mcd-score 0.3 and older)."""
    return (NORMALIZED_ENTROPY not in file and "predictive_entropy" in file and "mean" in file
            and file.attrs.get("kind") == "probabilities" and file["mean"].shape[1] > 1)


def read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every row dataset (strings as ``str`` object arrays) and the root attributes.

    Raises:
        OutputError: The file is missing or not an mcd-score results file.
    """
    with open_results(path) as file:
        return {name: read_dataset(file, name) for name in data_names(file)}, read_attrs(file)


def column_map(file: h5py.File) -> dict[str, tuple[str, int | None]]:
    """Each table column of ``file`` -> (dataset, class index or None), in table order."""
    return table_map(data_names(file), class_names(file))


def table_map(names: Sequence[str], classes: Sequence[str]) -> dict[str, tuple[str, int | None]]:
    """Each table column -> (dataset, class index or None), in table order, for the datasets
    ``names`` (in schema order) and the class coordinate ``classes``.

    Per-class datasets give one column per class, ``<dataset>_<class name>``.
    """
    columns: dict[str, tuple[str, int | None]] = {}
    for column in SCALAR_ORDER:
        if column in names:
            columns[column] = (column, None)
        elif column == "predicted_name" and "predicted_class" in names:
            columns[column] = ("predicted_class", None)
    for name in names:
        if name in columns or name in ("key", "passes"):
            continue
        if len(schema.spec(name).dims) == 1:
            columns[name] = (name, None)
        else:
            columns.update({f"{name}_{c}": (name, i) for i, c in enumerate(classes)})
    if "key" in names:
        columns["key"] = ("key", None)
    return columns


def table_columns(file: h5py.File) -> list[str]:
    """The columns :func:`read_results` can return for this file, in order."""
    return list(column_map(file))


def _pandas():
    try:
        import pandas
    except ImportError as error:
        raise ScorerUsageError("reading results as a table needs pandas: pip install "
                               "'mcd-score[table]' (or pip install pandas)") from error
    return pandas


def read_results(path: Path, columns: Sequence[str] | None = None,
                 chunk_rows: int | None = None):
    """The results as a pandas DataFrame, one row per image.

    Args:
        path: A results file.
        columns: Columns to read (see :func:`table_columns`); all by default. Only the datasets
            they need are read.
        chunk_rows: If given, return an iterator of DataFrames of at most this many rows, so
            files larger than memory can be processed.

    Raises:
        OutputError: The file is not a results file.
        ScorerUsageError: pandas is missing, or a column does not exist.
    """
    pandas = _pandas()
    file = open_results(path)
    try:
        available = table_columns(file)
        wanted = list(available if columns is None else columns)
        unknown = [c for c in wanted if c not in available]
        if unknown:
            raise ScorerUsageError(f"{path} has no columns {unknown}; it has: {', '.join(available)}")
    except BaseException:
        file.close()
        raise
    frames = _frames(pandas, file, wanted, chunk_rows or DEFAULT_CHUNK_ROWS)
    if chunk_rows is not None:
        return frames
    parts = list(frames)
    return pandas.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _frames(pandas, file: h5py.File, wanted: list[str], chunk_rows: int) -> Iterator:
    with file:
        mapping = column_map(file)
        classes = class_names(file)
        rows = row_count(file)
        for start in range(0, max(rows, 1), chunk_rows):
            stop = min(rows, start + chunk_rows)
            yield table_frame(pandas, lambda name, start=start, stop=stop: read_dataset(
                file, name, start, stop), mapping, wanted, classes)


def table_frame(pandas, dataset: Callable[[str], np.ndarray],
                mapping: dict[str, tuple[str, int | None]], wanted: Sequence[str],
                classes: Sequence[str]):
    """A DataFrame of the ``wanted`` columns of :func:`table_map`, each read by ``dataset(name)``
    (a dataset's rows, strings as ``str``), each dataset once."""
    names = np.array([*classes, ""], dtype=object)
    cache: dict[str, np.ndarray] = {}
    block = {}
    for column in wanted:
        name, index = mapping[column]
        if name not in cache:
            cache[name] = dataset(name)
        values = cache[name] if index is None else cache[name][:, index]
        if column == "predicted_name":
            values = names[np.where(values < 0, len(names) - 1, values)]
        block[column] = _series(pandas, values)
    return pandas.DataFrame(block, columns=list(wanted))


def _series(pandas, values: np.ndarray):
    """A column; text with surrogate escapes (file names that are not UTF-8) stays exact."""
    if values.dtype == object and any(
            isinstance(v, str) and not v.isascii() and _has_surrogates(v) for v in values):
        return pandas.Series(values, dtype=object)
    return pandas.Series(values)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def iter_part_rows(parts: Sequence[tuple[Path, int]], names: Sequence[str],
                   rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[dict[str, np.ndarray]]:
    """The rows of the parts, in order, in blocks of at most ``rows`` rows (strings as ``str``)."""
    for part, count in parts:
        with h5py.File(part, "r") as file:
            for start in range(0, count, rows):
                yield {name: read_dataset(file, name, start, start + rows) for name in names}
