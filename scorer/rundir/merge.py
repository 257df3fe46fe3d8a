"""``python -m scorer.rundir.merge``: write a finished results file, in a child process.

Run by :func:`scorer.rundir.child.run_module`; reads a JSON payload on stdin and writes ``path``:

- ``mode = "segments"``: from the committed segments of a local run (``segments``);
- ``mode = "stitch"``: virtual datasets over the part files of a sharded run (``parts``);
- ``mode = "consolidate"``: the part files' rows copied into one plain file (``parts``).

Exits 0, or 1 with the reason as the last line of stderr. It leaves with ``os._exit`` so that
HDF5's exit handlers, which crash after a failed write, never run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from scorer.results import schema
from scorer.results.reader import iter_part_rows
from scorer.results.schema import FileHeader
from scorer.results.stitch import write_stitched
from scorer.results.writer import write_results
from scorer.rundir.segments import Segment, iter_columns, rows_in

MODULE = "scorer.rundir.merge"
"""This module's name, as the child process is started with it."""


def write(payload: dict[str, Any]) -> None:
    """Do the work a payload describes (see the module docstring)."""
    fields = dict(payload["header"])
    fields["class_names"] = tuple(fields["class_names"])
    header, path = FileHeader(**fields), Path(payload["path"])
    if payload["mode"] == "segments":
        parts = [Segment(start, stop, Path(name)) for start, stop, name in payload["segments"]]
        write_results(path, header, iter_columns(parts), rows_in(parts))
        return
    parts = [(Path(name), int(rows)) for name, rows in payload["parts"]]
    if payload["mode"] == "stitch":
        write_stitched(path, header, parts, Path(payload["folder"]))
    else:
        names = [s.name for s in schema.dataset_specs(header.kind, header.save_passes,
                                                       header.has_labels)]
        write_results(path, header, iter_part_rows(parts, names), sum(r for _, r in parts))


def main() -> None:
    try:
        write(json.load(sys.stdin))
    except BaseException as error:  # reported to the parent, whatever it is
        reason = error.strerror if isinstance(error, OSError) and error.strerror else \
            f"{type(error).__name__}: {error}"
        sys.stderr.write(f"\n{reason}\n")
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
