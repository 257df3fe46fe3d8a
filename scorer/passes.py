"""Running the T stochastic passes of a batch and turning them into result rows.

:func:`plan` splits the work into ONNX Runtime calls that fit the memory budget; :func:`run_passes`
runs every pass of some images in chunks and merges the chunks' statistics in float64 (Chan et
al.); :func:`score_batch` builds the rows of a batch, failed images and non-finite outputs
included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scorer import metrics, schema, stats
from scorer.contract import OUTPUT_PASSES, ModelMetadata
from scorer.pipeline import Batch
from scorer.session import ScoringSession

PLAN_BATCH = 32
DEFAULT_BATCH = {"CPUExecutionProvider": 32, "CUDAExecutionProvider": 128}
"""Images per call when --batch-size is not given (capped by --max-memory). Measured on 2 CPU
cores (MobileNetV2 160x160, T=50): batch 16-32 runs at ~300 images/s in ~200-350 MiB, batch 205
at ~120 images/s in ~1.9 GiB; larger batches only pay off on a GPU."""
REASON_NON_FINITE = "non-finite output"


@dataclass(frozen=True)
class Plan:
    """How a run splits its work: images per batch, passes per call, images per call."""

    batch_size: int
    pass_chunk: int
    call_images: int = 0  # images per ONNX call (0: the whole batch); below batch_size only when
    # an explicit --batch-size does not fit --max-memory

    def chunks(self, passes: int) -> list[tuple[int, int]]:
        """``(start, count)`` of each pass chunk; depends on ``passes`` and the chunk size only."""
        return [(s, min(self.pass_chunk, passes - s)) for s in range(0, passes, self.pass_chunk)]


def plan(meta: ModelMetadata, passes: int, max_memory_mb: int, batch_size: int | None,
         provider: str) -> Plan:
    """Choose the pass chunk (independent of the batch size, so results are too) and batch size.

    Memory per ONNX call is estimated as ``images * (per_image + chunk * per_image_pass)`` from the
    byte counts measured at export time. An explicit ``batch_size`` that does not fit is run in
    several calls of ``call_images`` images.
    """
    limit = max_memory_mb * 2**20
    per_image = max(1, meta.bytes_per_image)
    per_pass = max(1, meta.bytes_per_image_pass)
    chunk = max(1, min(passes, int((limit / PLAN_BATCH - per_image) // per_pass)))
    fits = max(1, int(limit // (per_image + chunk * per_pass)))
    if batch_size is not None:
        return Plan(batch_size, chunk, min(batch_size, fits))
    batch = min(DEFAULT_BATCH.get(provider, PLAN_BATCH), fits)
    return Plan(batch, chunk, batch)


def run_passes(session: ScoringSession, images: np.ndarray, passes: int, seed: int,
               save_passes: bool, run_plan: Plan) -> tuple[stats.PassStats, np.ndarray | None]:
    """All ``passes`` passes for ``images`` in chunks; merged stats and optional ``[N, T, C]``."""
    outputs = session.stat_outputs() + ([OUTPUT_PASSES] if save_passes else [])
    merged = None
    kept = []
    for start, count in run_plan.chunks(passes):
        result = session.run(images, seed, start, count, outputs)
        entropies = result.get("entropy_sum", result.get("label_entropy_sum"))
        chunk = stats.stats_from_outputs(count, result["pass_sum"], result["pass_m2"], entropies,
                                         result.get("votes"))
        merged = chunk if merged is None else stats.merge_stats(merged, chunk)
        if save_passes:
            kept.append(result[OUTPUT_PASSES])
    return merged, (np.concatenate(kept, axis=1) if kept else None)


def score_batch(session: ScoringSession, batch: Batch, passes: int, seed: int, save_passes: bool,
                run_plan: Plan) -> dict[str, np.ndarray | list[str]]:
    """Run every pass for one batch and return its columns (failed images get fill values).

    Rows whose outputs are not finite (NaN or inf from the model) are failed rows with status
    ``"non-finite output"``: a NaN is never reported as a result.
    """
    meta = session.metadata
    kind, n = meta.output_kind, len(batch)
    values = metrics.failed_metrics(n, meta.num_outputs, kind)
    per_pass = np.full((n, passes, meta.num_outputs), np.nan, np.float32) if save_passes else None
    status, reasons = list(batch.status), list(batch.reasons)
    images = batch.images.reshape(len(batch.ok_rows), *meta.input_shape[1:])
    step = max(1, run_plan.call_images or len(images))
    for start in range(0, len(images), step):  # results are per image: splitting is exact
        rows = batch.ok_rows[start:start + step]
        merged, kept = run_passes(session, images[start:start + step], passes, seed, save_passes,
                                  run_plan)
        computed = metrics.metrics_from_stats(merged, kind)
        finite = metrics.finite_rows(computed)
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
