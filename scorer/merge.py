"""``python -m scorer.merge``: write a finished results file from committed segments.

Run by :func:`scorer.isolate.run_module` in a child process; reads a JSON payload on stdin
(``path``, ``header``, ``segments``), writes the file, and exits 0, or 1 with the reason as the
last line of stderr. It leaves with ``os._exit`` so that HDF5's exit handlers, which crash after a
failed write, never run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from scorer.h5write import FileHeader, write_results
from scorer.segments import Segment, iter_columns


def main() -> None:
    payload = json.load(sys.stdin)
    header = payload["header"]
    header["class_names"] = tuple(header["class_names"])
    parts = [Segment(start, stop, Path(path)) for start, stop, path in payload["segments"]]
    try:
        write_results(Path(payload["path"]), FileHeader(**header), iter_columns(parts),
                      parts[-1].stop if parts else 0)
    except BaseException as error:  # reported to the parent, whatever it is
        reason = error.strerror if isinstance(error, OSError) and error.strerror else \
            f"{type(error).__name__}: {error}"
        sys.stderr.write(f"\n{reason}\n")
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
