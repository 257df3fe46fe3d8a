"""One decoded batch -> its result rows: the step every way of scoring shares.

:func:`score_batch` runs every pass of a batch's decoded images (:mod:`scorer.model.passes`),
turns the merged statistics into metrics (:mod:`scorer.metrics.uncertainty`) and lays them out as
the rows of the results schema (:mod:`scorer.results.schema`), failed images and non-finite
outputs included. A local run, a Ray worker and an in-memory prediction all call it.
"""

from __future__ import annotations

import numpy as np

from scorer.images.batches import Batch
from scorer.metrics.uncertainty import failed_metrics, finite_rows, metrics_from_stats
from scorer.model.passes import Plan, run_passes
from scorer.model.session import ScoringSession
from scorer.results import schema

REASON_NON_FINITE = "non-finite output"


def score_batch(session: ScoringSession, batch: Batch, passes: int, seed: int, save_passes: bool,
                run_plan: Plan) -> dict[str, np.ndarray | list[str]]:
    """Run every pass for one batch and return its columns (failed images get fill values).

    Rows whose outputs are not finite (NaN or inf from the model) are failed rows with status
    ``"non-finite output"``: a NaN is never reported as a result.
    """
    meta = session.metadata
    kind, n = meta.output_kind, len(batch)
    values = failed_metrics(n, meta.num_outputs, kind)
    per_pass = np.full((n, passes, meta.num_outputs), np.nan, np.float32) if save_passes else None
    status, reasons = list(batch.status), list(batch.reasons)
    images = batch.images.reshape(len(batch.ok_rows), *meta.input_shape[1:])
    step = max(1, run_plan.call_images or len(images))
    for start in range(0, len(images), step):  # results are per image: splitting is exact
        rows = batch.ok_rows[start:start + step]
        merged, kept = run_passes(session, images[start:start + step], passes, seed, save_passes,
                                  run_plan)
        computed = metrics_from_stats(merged, kind)
        finite = finite_rows(computed)
        if kept is not None:
            finite &= np.isfinite(kept.reshape(len(kept), -1)).all(axis=1)
        for name, column in computed.items():
            values[name][rows[finite]] = column[finite]
        if per_pass is not None:
            per_pass[rows[finite]] = kept[finite]
        for row in rows[~finite]:
            status[row] = REASON_NON_FINITE
            reasons[row] = ("the model's output is NaN or infinite for this image; check the "
                            "preprocessing recorded in the model's metadata")
    columns: dict[str, np.ndarray | list[str]] = {
        "path": [ref.path for ref in batch.refs], "key": list(batch.keys), "status": status,
        "reason": reasons, "label": [ref.label or "" for ref in batch.refs]}
    for name, column in values.items():
        columns[name] = column.astype(schema.spec(name).dtype)
    if per_pass is not None:
        columns["passes"] = per_pass
    return columns
