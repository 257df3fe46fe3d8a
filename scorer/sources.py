"""Stitched results files: datasets that are HDF5 virtual datasets over part files.

HDF5 reads a virtual dataset whose source file is missing as fill values, without an error, so a
stitched file is checked on open: every source must exist.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from scorer.errors import OutputError


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
