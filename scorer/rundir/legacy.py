"""Schema-1 files from mcd-score 0.1: a resumable partial is imported as the first segment.

Schema 1 kept an interrupted run in ``OUT.partial``, one HDF5 file whose ``rows_complete`` root
attribute counts the rows that were flushed. ``--resume`` checks that it belongs to the same run
(the identity attributes schema 1 recorded) and turns its complete rows into a segment, so the
run continues as a schema-2 run. Schema 1 had no ``reason`` dataset: imported failed rows get
their status code as their reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from scorer.errors import OutputError
from scorer.results import schema
from scorer.results.reader import read_attrs, read_dataset
from scorer.results.schema import FileHeader
from scorer.rundir import segments

DERIVED = ("reason", "normalized_entropy")  # schema 1 lacks them; read_dataset derives them
V1_IDENTITY = ("kind", "num_outputs", "passes", "seed", "save_passes", "has_labels",
               "model_sha256", "max_pixels", "jpeg_draft")


def partial_path(out: Path) -> Path:
    """Where schema 1 kept an interrupted run: ``OUT.partial``."""
    return out.with_name(out.name + ".partial")


def import_partial(old: Path, header: FileHeader, identity: Mapping[str, Any],
                   folder: Path) -> int:
    """Check ``old`` belongs to this run and commit its complete rows as segment 0 of ``folder``.

    Returns:
        The number of rows imported.

    Raises:
        OutputError: ``old`` is unreadable, of a different run, or lacks a dataset.
    """
    try:
        file = h5py.File(old, "r")
    except OSError as error:
        raise OutputError(f"cannot read the interrupted run {old} ({error}); use --overwrite "
                          "to start again") from error
    with file:
        _check_identity(old, read_attrs(file), identity)
        specs = schema.dataset_specs(header.kind, header.save_passes, header.has_labels)
        for spec in specs:
            if spec.name not in DERIVED and spec.name not in file:
                raise OutputError(f"{old} has no {spec.name!r} dataset; it is damaged, use "
                                  "--overwrite to start again")
        rows = int(file.attrs.get("rows_complete", 0))  # a partial: only its flushed rows
        columns: dict[str, Any] = {}
        for spec in specs:
            values = read_dataset(file, spec.name, 0, rows)  # reason: from status
            columns[spec.name] = values.tolist() if spec.dtype == schema.STRING else \
                np.asarray(values, dtype=spec.dtype)
    if rows:
        folder.mkdir(parents=True, exist_ok=True)
        segments.write_segment(folder, 0, columns)
    return rows


def _check_identity(old: Path, attrs: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
    differing = []
    for name in V1_IDENTITY:
        stored = attrs.get(name)
        if name in identity and stored != identity[name]:
            differing.append(f"{name}: {stored!r} (interrupted run) vs {identity[name]!r} (now)")
    if differing:
        raise OutputError(f"cannot resume {old}: it was written by a different run; "
                          f"{'; '.join(differing)}. Rerun with the same settings, or use "
                          "--overwrite to start again")
