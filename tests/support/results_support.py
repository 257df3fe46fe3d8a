"""Results files with known values, written through the real writer, for the results-stage tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scorer.results import schema
from scorer.results.schema import FileHeader
from scorer.results.writer import write_results

CLASSES = ("cat", "dog", "émeu")


def make_rows(kind: str, count: int, passes: int = 4, start: int = 0) -> dict[str, object]:
    """Rows whose every value is known: row i, class c -> (i + 1) * 0.01 + c * 0.1 (+ offsets)."""
    rng = np.arange(start, start + count)
    per_class = ((rng[:, None] + 1) * 0.01 + np.arange(3)[None, :] * 0.1).astype(np.float32)
    rows: dict[str, object] = {
        "path": [f"{CLASSES[i % 3]}/{i:03d}.png" for i in rng], "key": [f"{i:064x}" for i in rng],
        "status": ["ok" if i % 5 else "truncated" for i in rng],
        "reason": ["" if i % 5 else "the PNG file ends early" for i in rng],
        "label": [CLASSES[i % 3] for i in rng],
        "passes": np.repeat(per_class[:, None, :], passes, axis=1)}
    for name in schema.metric_names(kind):
        spec = schema.spec(name)
        if spec.dtype == schema.INT:
            rows[name] = (rng % 3).astype(np.int64)
        elif len(spec.dims) == 2:
            rows[name] = per_class + len(name)
        else:
            rows[name] = (rng * 0.5 + len(name)).astype(np.float32)
    return rows


def write(path: Path, kind: str = "probabilities", count: int = 7, save_passes: bool = True,
          labels: bool = True, batches: int = 2) -> dict[str, object]:
    header = FileHeader(kind, 3, 4, 11, save_passes, labels, CLASSES, {"model_sha256": "m",
                                                                       "versions": {"x": 1}})
    parts = [make_rows(kind, len(chunk), start=chunk[0])
             for chunk in np.array_split(np.arange(count), batches) if len(chunk)]
    write_results(path, header, parts, count)
    return {name: (np.concatenate([p[name] for p in parts]) if isinstance(parts[0][name], np.ndarray)
                   else [v for p in parts for v in p[name]]) for name in parts[0]}
