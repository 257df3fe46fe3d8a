"""Write a finished results file (schema version 2) in one pass from batches of rows.

The file follows netCDF-4 conventions, so ``xarray.open_dataset(path, engine="h5netcdf")`` opens
it with named dimensions: every dataset's axes are attached to HDF5 dimension scales ``image``
(the row index), ``class`` (the class or label names; ``output`` for a ``values`` head) and
``pass`` (with ``save_passes``). Strings are UTF-8, variable length. Datasets are chunked (about
1 MiB a chunk), shuffled and gzip-compressed. Root attributes carry the run's provenance; dicts and
lists are stored as JSON strings, listed in the ``json_attrs`` attribute.

A file name that is not valid UTF-8 appears in ``path`` with ``\\xNN`` escapes, and its exact bytes
are kept, hex-encoded, in ``path_bytes_hex`` (a dataset that exists only when some name needs it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from scorer.results import schema
from scorer.results.schema import IMAGE_DIM, PASS_DIM, DatasetSpec, FileHeader

CHUNK_TARGET_BYTES = 1 << 20
VLEN_REFERENCE_BYTES = 16
CHUNK_CACHE_BYTES = CHUNK_TARGET_BYTES + (64 << 10)
"""Chunk cache of each open dataset: one chunk. Rows arrive in order, so a chunk is complete
before the next one is started and one in the cache is enough; HDF5 gives every open dataset a
cache of its own, so at 4 chunks each the ~15 datasets of a file held up to 60 MiB (measured: the
merge process grew from 99 to 137 MB between 100,000 and 1,000,000 rows; 91 to 94 MB with one
chunk, at the same speed)."""
GZIP_LEVEL = 4
RAW_PATHS = "path_bytes_hex"
RAW_PATHS_SPEC = DatasetSpec(RAW_PATHS, schema.STRING, (IMAGE_DIM,),
                             "exact bytes of paths that are not valid UTF-8, hex-encoded; empty for "
                             "the others")
RESERVED_ATTRS = ("schema_version", "kind", "num_outputs", "passes", "seed", "save_passes",
                  "has_labels", "json_attrs")


def chunk_rows(spec: DatasetSpec, num_outputs: int, passes: int) -> int:
    """Rows per chunk so that one chunk is about ``CHUNK_TARGET_BYTES`` (at least 1 row)."""
    item = VLEN_REFERENCE_BYTES if spec.dtype == schema.STRING else np.dtype(spec.dtype).itemsize
    row_bytes = item * int(np.prod(spec.row_shape(num_outputs, passes), dtype=np.int64))
    return max(1, CHUNK_TARGET_BYTES // max(1, row_bytes))


def display_text(value: str) -> str:
    """``value`` as valid UTF-8 text: undecodable bytes become ``\\xNN`` escapes."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def encode_attr(name: str, value: Any) -> tuple[Any, bool]:
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


def write_attrs(node: h5py.File, attrs: Mapping[str, Any]) -> None:
    """Store attributes, keeping the ``json_attrs`` list of JSON-encoded names."""
    json_names = set(json.loads(node.attrs.get("json_attrs", "[]")))
    for name, value in attrs.items():
        encoded, is_json = encode_attr(name, value)
        node.attrs[name] = encoded
        (json_names.add if is_json else json_names.discard)(name)
    node.attrs["json_attrs"] = json.dumps(sorted(json_names))


def write_header(file: h5py.File, header: FileHeader, rows: int) -> dict[str, h5py.Dataset]:
    """Root attributes and the dimension scales (image, class or output, pass) of a new results
    file; returns the scales by dimension (``class`` for the class or output coordinate)."""
    for name, value in header.root_attrs().items():
        file.attrs[name] = value
    write_attrs(file, header.attrs)
    class_dim = schema.class_dim(header.kind)
    scales = {IMAGE_DIM: file.create_dataset(IMAGE_DIM, data=np.arange(rows, dtype=np.int64)),
              "class": file.create_dataset(class_dim, data=header.names(),
                                           dtype=h5py.string_dtype("utf-8"))}
    if header.save_passes:
        scales[PASS_DIM] = file.create_dataset(PASS_DIM, data=np.arange(header.passes))
    for name, scale in scales.items():
        scale.make_scale(class_dim if name == "class" else name)
    return scales


def h5_dtype(spec: DatasetSpec):
    """The HDF5 type of a dataset of the schema (strings as variable-length UTF-8)."""
    return h5py.string_dtype("utf-8") if spec.dtype == schema.STRING else np.dtype(spec.dtype)


def describe(dataset: h5py.Dataset, spec: DatasetSpec, scales: Mapping[str, h5py.Dataset]) -> None:
    """The dataset's description attribute and its dimension scales."""
    dataset.attrs["description"] = spec.description
    for axis, dim in enumerate(spec.dims):
        dataset.dims[axis].attach_scale(scales[dim])


EMPTY_ROWS = 65536  # rows of empty raw paths written at once


class ResultsFile:
    """A results file being written: create with the total row count, then :meth:`write` rows."""

    def __init__(self, path: Path, header: FileHeader, rows: int) -> None:
        for name in header.attrs:
            if name in RESERVED_ATTRS:
                raise ValueError(f"attribute {name!r} is set by the results writer; rename it")
        self.header = header
        self.rows = rows
        self.specs = schema.dataset_specs(header.kind, header.save_passes, header.has_labels)
        self.file = h5py.File(path, "w", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_w0=1.0,
                              track_order=True)
        try:
            self._create()
        except BaseException:
            self.file.close()
            raise
        self.written = 0

    def _create(self) -> None:
        self.scales = write_header(self.file, self.header, self.rows)
        # kept open: closing a dataset flushes (recompresses) its partly filled chunk
        self.datasets = {spec.name: self._dataset(spec) for spec in self.specs}

    def _dataset(self, spec: DatasetSpec) -> h5py.Dataset:
        header = self.header
        row_shape = spec.row_shape(header.num_outputs, header.passes)
        dataset = self.file.create_dataset(
            spec.name, shape=(self.rows, *row_shape), maxshape=(None, *row_shape),
            dtype=h5_dtype(spec), chunks=(chunk_rows(spec, header.num_outputs, header.passes),
                                          *row_shape),
            compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
        describe(dataset, spec, self.scales)
        return dataset

    def write(self, columns: Mapping[str, np.ndarray]) -> None:
        """Write the next rows; ``columns`` holds every dataset of the schema, strings as ``str``."""
        count = len(columns["path"])
        start, stop = self.written, self.written + count
        if stop > self.rows:
            raise ValueError(f"{stop} rows written to a file created for {self.rows}")
        for spec in self.specs:
            values = columns[spec.name]
            if spec.dtype == schema.STRING:
                values = np.array([display_text(v) for v in values], dtype=object)
                if spec.name == "path":
                    self._keep_raw_paths(columns["path"], values, start)
            self.datasets[spec.name][start:stop] = values
        self.written = stop

    def _keep_raw_paths(self, paths, shown: np.ndarray, start: int) -> None:
        raw = {i: p.encode("utf-8", "surrogateescape").hex()
               for i, (p, text) in enumerate(zip(paths, shown, strict=True)) if text != p}
        if not raw:
            return
        if RAW_PATHS not in self.datasets:
            self.datasets[RAW_PATHS] = self._dataset(RAW_PATHS_SPEC)
            blank = np.array([""] * min(self.rows, EMPTY_ROWS), dtype=object)
            for first in range(0, self.rows, EMPTY_ROWS):  # in slices: no array of every row
                stop = min(self.rows, first + EMPTY_ROWS)
                self.datasets[RAW_PATHS][first:stop] = blank[:stop - first]
        for i, text in raw.items():
            self.datasets[RAW_PATHS][start + i] = text

    def close(self) -> None:
        if self.written != self.rows:
            self.file.close()
            raise ValueError(f"{self.written} of {self.rows} rows written")
        self.file.close()


def write_results(path: Path, header: FileHeader, batches: Iterable[Mapping[str, np.ndarray]],
                  rows: int) -> None:
    """Write a complete results file of ``rows`` rows from ``batches`` (see :class:`ResultsFile`).

    A write that fails (full disk) leaves HDF5 unable to close the file, and the process may
    crash later: call this in a child process (:func:`scorer.rundir.child.run_module`).
    """
    results = ResultsFile(path, header, rows)
    for columns in batches:  # on a failed write HDF5 cannot close the file cleanly: see isolate
        results.write(columns)
    results.close()
