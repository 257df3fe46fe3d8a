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
from scorer.h5write import RAW_PATHS, RAW_PATHS_SPEC, FileHeader, describe, h5_dtype, write_header
from scorer.reader import read_dataset

READ_ROWS = 65536


def write_stitched(path: Path, header: FileHeader, parts: Sequence[tuple[Path, int]],
                   folder: Path | None = None) -> None:
    """Write ``path`` as virtual datasets over ``parts`` (``(part file, rows)``, in row order),
    with source paths relative to ``folder``, where the file will live (default: its folder)."""
    folder = Path(path).parent if folder is None else Path(folder)
    rows = sum(count for _, count in parts)
    specs = schema.dataset_specs(header.kind, header.save_passes, header.has_labels)
    contents = {part: _names(part) for part, _ in parts}  # one open per part
    with h5py.File(path, "w", track_order=True) as file:
        scales = write_header(file, header, rows)
        if any(RAW_PATHS in names for names in contents.values()):
            specs = [*specs, RAW_PATHS_SPEC]
        for spec in specs:
            describe(_virtual(file, spec, header, parts, contents, folder), spec, scales)


def _virtual(file: h5py.File, spec: schema.DatasetSpec, header: FileHeader,
             parts: Sequence[tuple[Path, int]], contents: dict[Path, set[str]],
             folder: Path) -> h5py.Dataset:
    row_shape = spec.row_shape(header.num_outputs, header.passes)
    layout = h5py.VirtualLayout(shape=(sum(c for _, c in parts), *row_shape), dtype=h5_dtype(spec))
    start = 0
    for part, count in parts:
        if count and spec.name in contents[part]:
            source = os.path.relpath(part, folder)
            layout[start:start + count] = h5py.VirtualSource(source, spec.name,
                                                             shape=(count, *row_shape))
        start += count
    fill = None if spec.dtype == schema.STRING else spec.fill_value()
    return file.create_virtual_dataset(spec.name, layout, fillvalue=fill)


def _names(part: Path) -> set[str]:
    with h5py.File(part, "r") as file:
        return set(file)


def iter_part_rows(parts: Sequence[tuple[Path, int]], names: Sequence[str],
                   rows: int = READ_ROWS) -> Iterator[dict[str, np.ndarray]]:
    """The rows of the parts, in order, in blocks of at most ``rows`` rows (strings as ``str``)."""
    for part, count in parts:
        with h5py.File(part, "r") as file:
            for start in range(0, count, rows):
                yield {name: read_dataset(file, name, start, start + rows) for name in names}
