"""The HDF5 results file: schema, chunked appends, atomic finish and resume.

One row per input image, in input order, in datasets at the file root. Row axis ``N`` is the
input, ``T`` the stochastic pass and ``C`` the model output (class or regression value), so
``mean`` is ``[N, C]`` and ``passes`` is ``[N, T, C]``.

The file is written to ``OUT.partial`` and renamed over ``OUT`` only by
:meth:`ResultWriter.finish`, so ``OUT`` is always a complete run. Each write resizes every
dataset, writes, flushes, and only then advances the ``rows_complete`` root attribute, so an
interrupted partial holds a consistent prefix that ``--resume`` continues from.

Flushing recompresses every partly filled chunk (about 6 ms per dataset), so appended rows are
buffered (at most ``BUFFER_BYTES``) and written when the buffer is full, ``flush_seconds`` after
the oldest buffered row, and on :meth:`ResultWriter.close` / :meth:`ResultWriter.finish`. A
killed process (SIGKILL, power loss) loses at most that buffer; Ctrl-C and SIGTERM handlers
that call ``close()`` lose nothing. ``flush_seconds=0`` writes and flushes on every append.

Provenance travels in root attributes: ``schema_version``, ``kind``, ``num_outputs``,
``passes``, ``seed``, ``save_passes``, ``has_labels``, ``rows_complete`` and whatever the
caller adds (dicts and lists are stored as JSON strings and listed in ``json_attrs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from scorer.errors import OutputError

SCHEMA_VERSION = 1
KINDS = ("probabilities", "values")
MODES = ("new", "overwrite", "resume")

CHUNK_TARGET_BYTES = 1 << 20
"""A chunk holds as many rows as fit in 1 MiB (at least one), so it is 0.5-1 MiB."""
VLEN_REFERENCE_BYTES = 16
"""Bytes a variable-length string takes inside a chunk (the text itself lives in the heap)."""
CHUNK_CACHE_BYTES = 4 * CHUNK_TARGET_BYTES
"""Per-dataset chunk cache: the chunk being filled stays in memory between appends."""
GZIP_LEVEL = 4
BUFFER_BYTES = 8 * CHUNK_TARGET_BYTES
"""Appended rows are written to the file once the buffer holds this much (or on a timer)."""
FLUSH_SECONDS = 5.0

IDENTITY_ATTRS = ("kind", "num_outputs", "passes", "seed", "save_passes", "has_labels")
"""Root attributes that must match for ``--resume`` to continue a partial file."""
RESERVED_ATTRS = ("schema_version", *IDENTITY_ATTRS, "rows_complete", "json_attrs")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the results file.

    Attributes:
        name: Dataset name at the file root.
        dtype: ``"str"`` (UTF-8 variable length), ``"float32"`` or ``"int64"``.
        axes: Axis names, first always ``"N"``: ``("N",)``, ``("N", "C")`` or ``("N", "T", "C")``.
        description: One sentence, stored as the dataset's ``description`` attribute.
        when: ``"always"``, ``"labels"``, ``"probabilities"`` or ``"save_passes"``.
    """

    name: str
    dtype: str
    axes: tuple[str, ...]
    description: str
    when: str = "always"

    @property
    def shape_text(self) -> str:
        """The shape as written in docs, e.g. ``"[N, C]"``."""
        return "[" + ", ".join(self.axes) + "]"

    def row_shape(self, num_outputs: int, passes: int) -> tuple[int, ...]:
        """Shape of one row (all axes after ``N``)."""
        sizes = {"C": num_outputs, "T": passes}
        return tuple(sizes[axis] for axis in self.axes[1:])

    def numpy_dtype(self) -> np.dtype:
        """The dtype h5py stores."""
        if self.dtype == "str":
            return h5py.string_dtype("utf-8")
        return np.dtype(self.dtype)

    def chunk_rows(self, num_outputs: int, passes: int) -> int:
        """Rows per chunk so that one chunk is about ``CHUNK_TARGET_BYTES`` (at least 1 row)."""
        item = VLEN_REFERENCE_BYTES if self.dtype == "str" else np.dtype(self.dtype).itemsize
        row_bytes = item * int(np.prod(self.row_shape(num_outputs, passes), dtype=np.int64))
        return max(1, CHUNK_TARGET_BYTES // max(1, row_bytes))


SCHEMA: tuple[DatasetSpec, ...] = (
    DatasetSpec("path", "str", ("N",),
                "[N] UTF-8 string: the image path as given on input, rows in input order."),
    DatasetSpec("key", "str", ("N",),
                "[N] string: SHA-256 hex of the image file bytes, empty if it was unreadable."),
    DatasetSpec("status", "str", ("N",),
                "[N] string: 'ok' if the image was scored, else why it failed (metrics then NaN)."),
    DatasetSpec("label", "str", ("N",),
                "[N] string: the known label of each image, empty where none was given.", "labels"),
    DatasetSpec("mean", "float32", ("N", "C"),
                "[N, C] float32: mean over the T passes of each output (probability or value)."),
    DatasetSpec("std", "float32", ("N", "C"),
                "[N, C] float32: standard deviation over the T passes of each output."),
    DatasetSpec("predicted_class", "int64", ("N",),
                "[N] int64: index of the largest mean probability, -1 for failed rows.",
                "probabilities"),
    DatasetSpec("confidence", "float32", ("N",),
                "[N] float32: the largest mean probability (of the predicted class).",
                "probabilities"),
    DatasetSpec("predictive_entropy", "float32", ("N",),
                "[N] float32: entropy of the mean probabilities in nats (total uncertainty).",
                "probabilities"),
    DatasetSpec("expected_entropy", "float32", ("N",),
                "[N] float32: mean over the T passes of each pass's entropy in nats (aleatoric).",
                "probabilities"),
    DatasetSpec("mutual_information", "float32", ("N",),
                "[N] float32: predictive minus expected entropy in nats (epistemic, BALD).",
                "probabilities"),
    DatasetSpec("variation_ratio", "float32", ("N",),
                "[N] float32: fraction of the T passes whose top class is not the modal class.",
                "probabilities"),
    DatasetSpec("passes", "float32", ("N", "T", "C"),
                "[N, T, C] float32: the raw output of every stochastic pass.", "save_passes"),
)

STRING_COLUMNS = ("path", "key", "status", "label")


def dataset_specs(kind: str, save_passes: bool, has_labels: bool) -> list[DatasetSpec]:
    """The datasets a file of this kind holds, in schema order."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    enabled = {"always": True, "labels": has_labels,
               "probabilities": kind == "probabilities", "save_passes": save_passes}
    return [spec for spec in SCHEMA if enabled[spec.when]]


def dataset_descriptions(kind: str, save_passes: bool,
                         has_labels: bool) -> list[tuple[str, str, str, str]]:
    """``(name, dtype, shape, description)`` of each dataset, for generating or checking docs."""
    return [(s.name, s.dtype, s.shape_text, s.description)
            for s in dataset_specs(kind, save_passes, has_labels)]


def metric_names(kind: str, save_passes: bool = False) -> list[str]:
    """Names :meth:`ResultWriter.append` expects in ``ResultRows.metrics`` (not ``passes``)."""
    return [s.name for s in dataset_specs(kind, save_passes, False)
            if s.name not in STRING_COLUMNS and s.name != "passes"]


def partial_path(out: Path) -> Path:
    """The temporary sibling a run writes before :meth:`ResultWriter.finish`: ``OUT.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


@dataclass
class ResultRows:
    """A batch of rows to append, all lists and arrays of the same length ``n``.

    Attributes:
        path: Input path of each row.
        key: SHA-256 hex of the image bytes, ``""`` if unreadable.
        status: ``"ok"`` or the failure reason.
        label: Known label of each row (``None`` -> ``""``), or ``None`` when labels are unknown.
        metrics: ``mean``/``std`` ``[n, C]`` and, for probabilities, the ``[n]`` metrics;
            floats of any width (cast to float32 on write).
        passes: ``[n, T, C]`` per-pass outputs when the run saves passes, else ``None``.
    """

    path: list[str]
    key: list[str]
    status: list[str]
    label: list[str | None] | None
    metrics: dict[str, np.ndarray]
    passes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.path)


def _encode_attr(name: str, value: Any) -> tuple[Any, bool]:
    """HDF5-storable value for one root attribute and whether it was JSON-encoded."""
    if isinstance(value, bool | np.bool_):
        return np.bool_(value), False
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value, False
    try:
        return json.dumps(value, sort_keys=True), True
    except TypeError as err:
        raise TypeError(f"attribute {name!r} of type {type(value).__name__} cannot be stored: "
                        "use str, int, float, bool, or JSON-serialisable dicts and lists") from err


def _plain(value: Any) -> Any:
    """An attribute value as a plain Python object."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_attrs(file: h5py.File) -> dict[str, object]:
    """Root attributes as plain Python values, JSON attributes decoded."""
    json_names = set(json.loads(file.attrs.get("json_attrs", "[]")))
    attrs: dict[str, object] = {}
    for name, value in file.attrs.items():
        if name == "json_attrs":
            continue
        value = _plain(value)
        attrs[name] = json.loads(value) if name in json_names else value
    return attrs


def open_results(path: Path) -> h5py.File:
    """Open a results file read-only, checking it is an mcd-score file of a known schema.

    Raises:
        OutputError: The file is missing, not HDF5, not an mcd-score results file, or newer.
    """
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"results file {path} does not exist; check the path")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise OutputError(f"{path} is not a readable HDF5 file ({err}); "
                          "expected an mcd-score results file") from err
    version = file.attrs.get("schema_version")
    if version is None:
        file.close()
        raise OutputError(f"{path} is not an mcd-score results file: it has no "
                          "'schema_version' root attribute")
    if int(version) > SCHEMA_VERSION:
        file.close()
        raise OutputError(f"{path} has schema version {int(version)}, this mcd-score reads up "
                          f"to {SCHEMA_VERSION}; upgrade mcd-score")
    return file


def read_dataset(file: h5py.File, name: str) -> np.ndarray:
    """One dataset's completed rows (up to ``rows_complete``), strings decoded to ``str``."""
    dataset = file[name]
    rows = int(file.attrs.get("rows_complete", dataset.shape[0]))
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return dataset.asstr()[:rows]
    return dataset[:rows]


def read_results(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """All datasets (strings as ``str`` object arrays) and root attributes of a results file.

    Raises:
        OutputError: The file is missing or not an mcd-score results file.
    """
    with open_results(path) as file:
        datasets = {name: read_dataset(file, name) for name in file
                    if isinstance(file[name], h5py.Dataset)}
        return datasets, read_attrs(file)


def _fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file or directory entry to disk where the platform allows it."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class ResultWriter:
    """Appends rows to ``OUT.partial`` and renames it to ``OUT`` on :meth:`finish`.

    Use :meth:`open`; as a context manager it closes without finishing when the block ends
    (after an exception or without :meth:`finish`), leaving the partial for ``--resume``.
    """

    def __init__(self, file: h5py.File, out: Path, specs: list[DatasetSpec], num_outputs: int,
                 passes: int, has_labels: bool, flush_seconds: float) -> None:
        self._file: h5py.File | None = file
        self.out = out
        self.partial = partial_path(out)
        self._specs = specs
        self._num_outputs = num_outputs
        self._passes = passes
        self._has_labels = has_labels
        self._flush_seconds = flush_seconds
        self._written = int(file.attrs["rows_complete"])
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._buffered_since = 0.0

    @classmethod
    def open(cls, path: Path, *, kind: str, num_outputs: int, passes: int, seed: int,
             save_passes: bool, has_labels: bool, attrs: Mapping[str, Any], mode: str,
             identity: Iterable[str] = (), flush_seconds: float = FLUSH_SECONDS) -> ResultWriter:
        """Start or resume writing the results file ``path`` (via ``path.partial``).

        Args:
            path: The final output file ``OUT``.
            kind: ``"probabilities"`` or ``"values"``.
            num_outputs: ``C``, outputs per pass.
            passes: ``T``, stochastic passes per image.
            seed: The run's random seed.
            save_passes: Whether the ``[N, T, C]`` ``passes`` dataset is written.
            has_labels: Whether the ``label`` dataset is written.
            attrs: Extra root attributes (str/int/float/bool; dicts and lists become JSON).
            mode: ``"new"`` (fail if OUT or a partial exists), ``"overwrite"`` (start afresh,
                replace OUT on finish) or ``"resume"`` (continue OUT.partial).
            identity: Names in ``attrs`` that must also match to resume, e.g. ``model_sha256``.
            flush_seconds: Longest time appended rows wait in memory before being written.

        Raises:
            OutputError: OUT or its partial exists for the mode, the partial belongs to a
                different run, or the directory is not writable.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        specs = dataset_specs(kind, save_passes, has_labels)
        _check_not_reserved(attrs)
        out = Path(path)
        partial = partial_path(out)
        root = {"schema_version": SCHEMA_VERSION, "kind": kind, "num_outputs": int(num_outputs),
                "passes": int(passes), "seed": int(seed), "save_passes": bool(save_passes),
                "has_labels": bool(has_labels)}
        file = None
        if mode == "new":
            if out.exists():
                raise OutputError(f"output file {out} already exists; use --overwrite to replace "
                                  "it or --resume to continue an interrupted run")
            if partial.exists():
                raise OutputError(f"found {partial}: a previous run was interrupted; use --resume "
                                  "to continue it or --overwrite to start again")
        elif mode == "resume":
            if partial.exists():
                file = _reopen(partial, root, attrs, tuple(identity), specs)
            elif out.exists():
                raise OutputError(f"{out} is already complete; use --overwrite to score again")
        if file is None:
            file = _create(partial, root, attrs, specs, num_outputs, passes)
        return cls(file, out, specs, num_outputs, passes, has_labels, flush_seconds)

    @property
    def rows_done(self) -> int:
        """Rows appended so far, including those of a resumed run."""
        return self._written + self._buffered_rows

    def done_paths(self) -> list[str]:
        """The ``path`` column of the completed rows, to check a resumed input list's prefix."""
        return self.done_column("path")

    def done_column(self, name: str) -> list[str]:
        """A string column (``path``, ``key``, ``status``) of the completed rows."""
        self.flush()
        return self._open_file()[name].asstr()[: self._written].tolist()

    def append(self, rows: ResultRows) -> None:
        """Append a batch; it is written and flushed once the buffer is full or old enough.

        Raises:
            ValueError: Columns of different lengths, missing or unexpected metrics, or
                arrays whose shape does not match ``C`` / ``T``.
        """
        self._open_file()
        columns = self._columns(rows)
        if len(rows) == 0:
            return
        if not self._buffer:
            self._buffered_since = time.monotonic()
        self._buffer.append(columns)
        self._buffered_rows += len(rows)
        self._buffered_bytes += sum(a.nbytes for a in columns.values())
        if (self._buffered_bytes >= BUFFER_BYTES
                or time.monotonic() - self._buffered_since >= self._flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Write buffered rows: resize, write, flush, then advance ``rows_complete`` and flush."""
        file = self._open_file()
        if not self._buffer:
            return
        start, stop = self._written, self._written + self._buffered_rows
        for spec in self._specs:
            parts = [columns[spec.name] for columns in self._buffer]
            dataset = file[spec.name]
            dataset.resize(stop, axis=0)
            dataset[start:stop] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        file.flush()
        file.attrs["rows_complete"] = stop
        file.flush()
        self._written = stop
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add or replace root attributes (dicts and lists are stored as JSON)."""
        file = self._open_file()
        _check_not_reserved(attrs)
        _write_attrs(file, attrs)
        file.flush()

    def finish(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Write buffered rows and final attributes, close, and rename the partial to OUT.

        Returns:
            The path of the finished results file.
        """
        if attrs:
            self.set_attrs(attrs)
        self.close()
        _fsync_path(self.partial)
        try:
            os.replace(self.partial, self.out)
        except OSError as err:
            raise OutputError(f"cannot rename {self.partial} to {self.out}: {err.strerror}; "
                              f"the results are complete in {self.partial}") from err
        _fsync_path(self.out.parent, directory=True)
        return self.out

    def close(self) -> None:
        """Write buffered rows and close without renaming (the partial stays for --resume).

        Idempotent.
        """
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        # Keep the original error; buffered rows that cannot be written are rescored on resume.
        with contextlib.suppress(Exception):
            self.close()

    def _open_file(self) -> h5py.File:
        if self._file is None:
            raise ValueError(f"the results writer for {self.out} is already closed")
        return self._file

    def _columns(self, rows: ResultRows) -> dict[str, Any]:
        """Validate a batch and return the array to write for each dataset."""
        count = len(rows)
        strings: dict[str, list[str | None] | None] = {
            "path": rows.path, "key": rows.key, "status": rows.status, "label": rows.label}
        if self._has_labels and rows.label is None:
            raise ValueError("this results file has labels: ResultRows.label must be a list")
        expected = {s.name for s in self._specs} - set(STRING_COLUMNS) - {"passes"}
        if set(rows.metrics) != expected:
            raise ValueError(f"metrics must be exactly {sorted(expected)}, "
                             f"got {sorted(rows.metrics)}")
        if (rows.passes is not None) != any(s.name == "passes" for s in self._specs):
            raise ValueError("ResultRows.passes must be given exactly when the file saves passes")
        columns: dict[str, Any] = {}
        for spec in self._specs:
            if spec.dtype == "str":
                values = ["" if v is None else str(v) for v in strings[spec.name] or []]
                array = np.array(values, dtype=spec.numpy_dtype()).reshape(len(values))
            else:
                source = rows.passes if spec.name == "passes" else rows.metrics[spec.name]
                array = np.asarray(source).astype(spec.dtype, copy=False)
                shape = (count, *spec.row_shape(self._num_outputs, self._passes))
                if array.shape != shape:
                    raise ValueError(f"{spec.name} has shape {array.shape}, expected {shape} "
                                     f"({spec.shape_text})")
            if len(array) != count:
                raise ValueError(f"{spec.name} has {len(array)} rows, path has {count}")
            columns[spec.name] = array
        return columns


def _check_not_reserved(attrs: Mapping[str, Any]) -> None:
    for name in attrs:
        if name in RESERVED_ATTRS:
            raise ValueError(f"attribute {name!r} is set by the results writer; rename it")


def _write_attrs(file: h5py.File, attrs: Mapping[str, Any]) -> None:
    """Store caller attributes, keeping the ``json_attrs`` list of JSON-encoded names."""
    json_names = set(json.loads(file.attrs.get("json_attrs", "[]")))
    for name, value in attrs.items():
        encoded, is_json = _encode_attr(name, value)
        file.attrs[name] = encoded
        if is_json:
            json_names.add(name)
        else:
            json_names.discard(name)
    file.attrs["json_attrs"] = json.dumps(sorted(json_names))


def _open_h5(path: Path, mode: str) -> h5py.File:
    return h5py.File(path, mode, rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_w0=1.0)


def _create(partial: Path, root: dict[str, Any], attrs: Mapping[str, Any],
            specs: list[DatasetSpec], num_outputs: int, passes: int) -> h5py.File:
    """Create a fresh, empty partial file (replacing an old one)."""
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
        file = _open_h5(partial, "w")
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(f"cannot write the results file {partial}: {reason}; choose a "
                          "writable output directory") from err
    try:
        for name, value in root.items():
            file.attrs[name] = value
        _write_attrs(file, attrs)
        for spec in specs:
            row_shape = spec.row_shape(num_outputs, passes)
            dataset = file.create_dataset(
                spec.name, shape=(0, *row_shape), maxshape=(None, *row_shape),
                dtype=spec.numpy_dtype(), chunks=(spec.chunk_rows(num_outputs, passes), *row_shape),
                compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
            dataset.attrs["description"] = spec.description
        file.attrs["rows_complete"] = 0
        file.flush()
    except BaseException:
        file.close()
        raise
    return file


def _reopen(partial: Path, root: dict[str, Any], attrs: Mapping[str, Any],
            identity: tuple[str, ...], specs: list[DatasetSpec]) -> h5py.File:
    """Reopen an interrupted partial, check it is the same run and drop half-written rows."""
    try:
        file = _open_h5(partial, "r+")
    except OSError as err:
        raise OutputError(f"cannot reopen the interrupted run {partial} ({err}); "
                          "use --overwrite to start again") from err
    try:
        _check_identity(file, partial, root, attrs, identity)
        rows = int(file.attrs.get("rows_complete", 0))
        for spec in specs:
            if spec.name not in file:
                raise OutputError(f"{partial} has no '{spec.name}' dataset; it is damaged, "
                                  "use --overwrite to start again")
            file[spec.name].resize(rows, axis=0)
        _write_attrs(file, attrs)
        file.flush()
    except BaseException:
        file.close()
        raise
    return file


def _check_identity(file: h5py.File, partial: Path, root: dict[str, Any],
                    attrs: Mapping[str, Any], identity: tuple[str, ...]) -> None:
    """Raise OutputError listing each identity attribute that differs from this run."""
    stored = read_attrs(file)
    now = {**root, **{name: attrs.get(name) for name in identity}}
    # Compare values as they read back from HDF5 (JSON round trip, plain Python types).
    differing = []
    for name in ("schema_version", *IDENTITY_ATTRS, *identity):
        now_value = now[name]
        if now_value is not None and name in identity:
            encoded, is_json = _encode_attr(name, now_value)
            now_value = json.loads(encoded) if is_json else _plain(encoded)
        ref_value = stored.get(name)
        if ref_value != now_value:
            differing.append(f"{name}: {_show(ref_value)} (partial) vs {_show(now_value)} (now)")
    if differing:
        raise OutputError(f"cannot resume {partial}: it was written by a different run; "
                          f"differing attributes: {'; '.join(differing)}. Rerun with the same "
                          "settings, or use --overwrite to start again")


def _show(value: object) -> str:
    return "(missing)" if value is None else repr(value)
