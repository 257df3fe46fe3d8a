"""Stitched results files: one file whose datasets are HDF5 virtual datasets over part files.

:func:`write_stitched` writes a file whose datasets map row ranges to the parts of a sharded run
(source paths relative to the stitched file's folder, so the pair can be moved together): no data
is copied, and h5py, xarray, :mod:`scorer.results.reader` and ``compare`` read it like a plain
file. The dimension scales, attributes and descriptions are the stitched file's own.
(:func:`scorer.results.reader.iter_part_rows` feeds :func:`scorer.results.writer.write_results`
to consolidate the parts into one plain file instead.)

HDF5 reads a virtual dataset whose source file is missing as fill values, without an error, so a
stitched file is checked on open (:func:`check_sources`): every source must exist.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from scorer.errors import OutputError
from scorer.results import schema
from scorer.results.schema import FileHeader
from scorer.results.writer import RAW_PATHS, RAW_PATHS_SPEC, describe, h5_dtype, write_header


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


def source_files(file: h5py.File, path: Path) -> list[Path]:
    """The distinct source files of the virtual datasets of ``file`` (relative to its folder)."""
    found: dict[Path, None] = {}
    for obj in file.values():
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            for source in obj.virtual_sources():
                if source.file_name != ".":
                    found[Path(path).parent / source.file_name] = None
    return list(found)


def check_sources(file: h5py.File, path: Path) -> None:
    """Raise :class:`OutputError` naming the missing part files of a stitched results file."""
    missing = [str(p) for p in source_files(file, path) if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise OutputError(f"{path} is stitched from part files and {len(missing)} of them are "
                          f"missing: {shown}; its rows from those parts would read as blanks. "
                          "Restore them, or rerun the job with --resume")
