"""The merge process's memory does not grow with the rows it writes (beyond a small bound)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from scorer.rundir.child import child_command, child_env
from scorer.rundir.merge import MODULE
from scorer.rundir.segments import SegmentWriter, committed

CLASSES = 10
SEGMENT_ROWS = 20_000
METRICS = ("predictive_entropy", "normalized_entropy", "expected_entropy", "mutual_information",
           "variation_ratio", "confidence")


def make_segments(folder: Path, rows: int) -> list:
    """Segments of ``rows`` rows of a labelled 10-class run, 20,000 rows each."""
    folder.mkdir()
    writer = SegmentWriter(folder, 0, flush_seconds=1e9, buffer_bytes=1 << 62)
    rng = np.random.default_rng(0)
    for start in range(0, rows, SEGMENT_ROWS):
        stop = min(rows, start + SEGMENT_ROWS)
        count = stop - start
        columns = {"path": [f"c{i % 100:03d}/image_{i:08d}.png" for i in range(start, stop)],
                   "key": [f"{i:064x}" for i in range(start, stop)],
                   "status": ["ok"] * count, "reason": [""] * count,
                   "label": [f"c{i % 100:03d}" for i in range(start, stop)],
                   "mean": rng.random((count, CLASSES), dtype=np.float32),
                   "std": rng.random((count, CLASSES), dtype=np.float32),
                   "predicted_class": rng.integers(0, CLASSES, count)}
        columns |= {name: rng.random(count, dtype=np.float32) for name in METRICS}
        writer.append(columns, count)
        writer.flush()
    return committed(folder)


def merge_peak_bytes(tmp_path: Path, rows: int) -> int:
    """Peak RSS of ``python -m scorer.rundir.merge`` writing ``rows`` rows from segments."""
    segments = make_segments(tmp_path / f"segments{rows}", rows)
    header = {"kind": "probabilities", "num_outputs": CLASSES, "passes": 20, "seed": 0,
              "save_passes": False, "has_labels": True,
              "class_names": [f"k{i}" for i in range(CLASSES)], "attrs": {}}
    payload = {"mode": "segments", "path": str(tmp_path / f"{rows}.h5"), "header": header,
               "segments": [[s.start, s.stop, str(s.path)] for s in segments]}
    child = subprocess.Popen(child_command(MODULE), stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=child_env())
    child.stdin.write(json.dumps(payload))
    child.stdin.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, child.stderr.read()
    return usage.ru_maxrss * 1024


def test_the_merge_of_300000_rows_peaks_within_a_few_bytes_a_row_of_100000(tmp_path):
    """10 bytes a row here between 100,000 and 300,000 rows, 2 up to 1,000,000 (with chunk caches
    of 4 chunks for each of the ~15 datasets, 112 over this span); bound 40."""
    small, large = (merge_peak_bytes(tmp_path, rows) for rows in (100_000, 300_000))
    per_row = (large - small) / 200_000
    assert per_row <= 40, per_row
