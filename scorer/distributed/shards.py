"""Cutting the input list into shards, and what a shard's part file has done so far."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from scorer.rundir.folder import parts_path, rows_folder
from scorer.rundir.segments import SEGMENT_NAME

MIN_SHARD_ROWS, MAX_SHARD_ROWS = 256, 8192
SHARDS_PER_WORKER = 4


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of the input list."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def shard_rows(count: int, workers: int, requested: int | None = None) -> int:
    """Rows per shard: ``requested``, else about four shards per worker, within 256..8192 rows
    (small enough to spread the work and to lose little to a killed worker, large enough that a
    shard's fixed cost, about 0.1 s for its run folder and part file, stays small)."""
    if requested is not None:
        return max(1, requested)
    wanted = math.ceil(count / max(1, workers * SHARDS_PER_WORKER))
    return max(MIN_SHARD_ROWS, min(MAX_SHARD_ROWS, wanted))


def plan_shards(count: int, rows: int) -> list[Shard]:
    """Consecutive shards of ``rows`` rows covering ``count`` inputs (the last may be shorter)."""
    return [Shard(i, start, min(count, start + rows))
            for i, start in enumerate(range(0, count, rows))]


def rows_committed(part: Path) -> int:
    """Rows a shard's run has committed so far, read from file names only (no side effects: the
    worker may be writing there right now)."""
    try:
        names = os.listdir(rows_folder(parts_path(part)))
    except OSError:
        return 0
    stops = [int(m[2]) for name in names if (m := SEGMENT_NAME.match(name))]
    return max(stops, default=0)
