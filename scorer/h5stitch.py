"""One results file from the part files of a sharded run: stitched (virtual) or consolidated.

:func:`write_stitched` writes a file whose datasets are HDF5 virtual datasets mapping row ranges to
the parts (source paths relative to the stitched file's folder, so the pair can be moved
together): no data is copied, and h5py, xarray, :mod:`scorer.reader` and ``compare`` read it like a
plain file. The dimension scales, attributes and descriptions are the stitched file's own.
:func:`iter_part_rows` feeds :func:`scorer.h5write.write_results` to consolidate the parts into
one plain file instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from scorer import schema
from scorer.h5write import RAW_PATHS, FileHeader, write_attrs
from scorer.reader import read_dataset
from scorer.schema import IMAGE_DIM, PASS_DIM

READ_ROWS = 65536


def write_stitched(path: Path, header: FileHeader, parts: Sequence[tuple[Path, int]],
                   folder: Path | None = None) -> None:
    """Write ``path`` as virtual datasets over ``parts`` (``(part file, rows)``, in row order),
    with source paths relative to ``folder``, where the file will live (default: its folder)."""
    folder = Path(path).parent if folder is None else Path(folder)
    rows = sum(count for _, count in parts)
    specs = schema.dataset_specs(header.kind, header.save_passes, header.has_labels)
    with h5py.File(path, "w", track_order=True) as file:
        for name, value in header.root_attrs().items():
            file.attrs[name] = value
        write_attrs(file, header.attrs)
        scales = _scales(file, header, rows)
        with_raw = [p for p, _ in parts if _has(p, RAW_PATHS)]
        names = [(spec.name, spec) for spec in specs]
        if with_raw:
            names.append((RAW_PATHS, schema.DatasetSpec(RAW_PATHS, schema.STRING, (IMAGE_DIM,),
                                                        "exact bytes of paths that are not valid "
                                                        "UTF-8, hex-encoded; empty for the others")))
        for name, spec in names:
            dataset = _virtual(file, name, spec, header, parts, folder)
            dataset.attrs["description"] = spec.description
            for axis, dim in enumerate(spec.dims):
                dataset.dims[axis].attach_scale(scales[dim])


def _scales(file: h5py.File, header: FileHeader, rows: int) -> dict[str, h5py.Dataset]:
    class_dim = schema.class_dim(header.kind)
    scales = {IMAGE_DIM: file.create_dataset(IMAGE_DIM, data=np.arange(rows, dtype=np.int64)),
              "class": file.create_dataset(class_dim, data=header.names(),
                                           dtype=h5py.string_dtype("utf-8"))}
    if header.save_passes:
        scales[PASS_DIM] = file.create_dataset(PASS_DIM, data=np.arange(header.passes))
    for name, scale in scales.items():
        scale.make_scale(class_dim if name == "class" else name)
    return scales


def _virtual(file: h5py.File, name: str, spec: schema.DatasetSpec, header: FileHeader,
             parts: Sequence[tuple[Path, int]], folder: Path) -> h5py.Dataset:
    row_shape = spec.row_shape(header.num_outputs, header.passes)
    dtype = h5py.string_dtype("utf-8") if spec.dtype == schema.STRING else np.dtype(spec.dtype)
    layout = h5py.VirtualLayout(shape=(sum(c for _, c in parts), *row_shape), dtype=dtype)
    start = 0
    for part, count in parts:
        if count and _has(part, name):
            source = os.path.relpath(part, folder)
            layout[start:start + count] = h5py.VirtualSource(source, name, shape=(count, *row_shape))
        start += count
    fill = None if spec.dtype == schema.STRING else spec.fill_value()
    return file.create_virtual_dataset(name, layout, fillvalue=fill)


def _has(part: Path, name: str) -> bool:
    with h5py.File(part, "r") as file:
        return name in file


def iter_part_rows(parts: Sequence[tuple[Path, int]], names: Sequence[str],
                   rows: int = READ_ROWS) -> Iterator[dict[str, np.ndarray]]:
    """The rows of the parts, in order, in blocks of at most ``rows`` rows (strings as ``str``)."""
    for part, count in parts:
        with h5py.File(part, "r") as file:
            for start in range(0, count, rows):
                yield {name: read_dataset(file, name, start, start + rows) for name in names}
