"""Benchmark: what crash safety costs. Rows written per second, measured in one run:

  direct      the rows written straight into the final HDF5 file in blocks of 4,096 rows (no crash
              safety: a kill can damage it, as schema 1's single partial file could)
  committed   mcd-score's path: rows committed as fsynced segment files every --commit-every
              seconds, then merged into the final file in a child process

for a 10-class model with and without saved passes (T=50), and the ratio committed / direct.

Usage: python scripts/bench_storage.py [--rows 200000] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from scorer.results import schema
from scorer.results.schema import FileHeader
from scorer.results.writer import write_results
from scorer.rundir.folder import RunDir

CLASSES, PASSES = 10, 50


def batch(start: int, count: int, save_passes: bool, rng: np.random.Generator) -> dict:
    rows: dict = {"path": [f"class{i % 7}/{i:08d}.jpg" for i in range(start, start + count)],
                  "key": [f"{i:064x}" for i in range(start, start + count)],
                  "status": ["ok"] * count, "reason": [""] * count,
                  "label": [f"class{i % 7}" for i in range(start, start + count)]}
    for name in schema.metric_names("probabilities"):
        spec = schema.spec(name)
        shape = (count, *spec.row_shape(CLASSES, PASSES))
        rows[name] = (rng.integers(0, CLASSES, shape) if spec.dtype == schema.INT
                      else rng.random(shape, dtype=np.float32))
    if save_passes:
        rows["passes"] = rng.random((count, PASSES, CLASSES), dtype=np.float32)
    return rows


def header(save_passes: bool) -> FileHeader:
    return FileHeader("probabilities", CLASSES, PASSES, 0, save_passes, True)


def blocks(batches: list[dict], rows: int = 4096):
    """Consecutive batches joined into blocks of about ``rows`` rows, as a buffering writer would."""
    for first in range(0, len(batches), max(1, rows // len(batches[0]["path"]))):
        group = batches[first:first + max(1, rows // len(batches[0]["path"]))]
        yield {name: (np.concatenate([g[name] for g in group]) if isinstance(value, np.ndarray)
                      else [v for g in group for v in g[name]]) for name, value in group[0].items()}


def direct(path: Path, batches: list[dict], rows: int, save_passes: bool) -> float:
    start = time.perf_counter()
    write_results(path, header(save_passes), blocks(batches), rows)
    return time.perf_counter() - start


def committed(path: Path, batches: list[dict], save_passes: bool) -> float:
    start = time.perf_counter()
    run = RunDir.open(path, header(save_passes), {"bench": 1}, "overwrite")
    writer = run.writer(flush_seconds=5.0)
    for columns in batches:
        writer.append(columns, len(columns["path"]))
    writer.flush()
    run.finish({})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.rows} rows in batches of {args.batch}, {CLASSES} classes, T={PASSES}\n")
    print(f"{'':14s}{'direct':>12s}{'committed':>12s}{'ratio':>8s}   (rows/s)")
    with tempfile.TemporaryDirectory() as folder:
        for save_passes in (False, True):
            rows = args.rows if not save_passes else args.rows // 10
            batches = [batch(s, min(args.batch, rows - s), save_passes, rng)
                       for s in range(0, rows, args.batch)]
            plain = direct(Path(folder) / "direct.h5", batches, rows, save_passes)
            safe = committed(Path(folder) / "safe.h5", batches, save_passes)
            label = f"passes saved ({rows})" if save_passes else f"metrics ({rows})"
            print(f"{label:14s}{rows / plain:12.0f}{rows / safe:12.0f}{plain / safe:8.2f}")


if __name__ == "__main__":
    main()
