"""Running the T stochastic passes of some images, in calls that fit the memory budget.

:func:`plan` splits the work into ONNX Runtime calls that fit the memory budget; :func:`run_passes`
runs every pass of some images in chunks and merges the chunks' statistics in float64 (Chan et
al.). :mod:`scorer.engine` turns them into result rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scorer.contract import (
    OUTPUT_ENTROPY_SUM,
    OUTPUT_LABEL_ENTROPY_SUM,
    OUTPUT_M2,
    OUTPUT_PASSES,
    OUTPUT_SUM,
    OUTPUT_VOTES,
    ModelMetadata,
)
from scorer.metrics import stats
from scorer.model import cuda as cuda_libraries
from scorer.model.session import CUDA, ScoringSession

PLAN_BATCH = 32
DEFAULT_BATCH = {"CPUExecutionProvider": 32, "CUDAExecutionProvider": 128}
"""Images per call when --batch-size is not given (capped by --max-memory). Measured on 2 CPU
cores (MobileNetV2 160x160, T=50): batch 16-32 runs at ~300 images/s in ~200-350 MiB, batch 205
at ~120 images/s in ~1.9 GiB; larger batches only pay off on a GPU."""


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

    On CUDA the chunk is sized for the CUDA batch (128 images, not 32) and divides ``passes``, so
    that every call has the same shape (cuDNN and cuBLAS choose algorithms, and round, per shape).
    """
    limit = max_memory_mb * 2**20
    per_image = max(1, meta.bytes_per_image)
    per_pass = max(1, meta.bytes_per_image_pass)
    planned = DEFAULT_BATCH[CUDA] if provider == CUDA else PLAN_BATCH
    chunk = max(1, min(passes, int((limit / planned - per_image) // per_pass)))
    if provider == CUDA:
        chunk = max(d for d in range(1, chunk + 1) if passes % d == 0)
    fits = max(1, int(limit // (per_image + chunk * per_pass)))
    if batch_size is not None:
        return Plan(batch_size, chunk, min(batch_size, fits))
    batch = min(DEFAULT_BATCH.get(provider, PLAN_BATCH), fits)
    return Plan(batch, chunk, batch)


GPU_SHARE = 0.8  # of the GPU's free memory a run plans to use (the rest: cuDNN workspaces, others)


def memory_budget(session: ScoringSession, max_memory_mb: int) -> int:
    """The MB a run plans its calls in: ``--max-memory``, and on CUDA at most 80% of the GPU's
    free memory when the CUDA runtime says how much that is."""
    if not session.on_cuda:
        return max_memory_mb
    free = cuda_libraries.free_memory_mb()
    return max_memory_mb if free is None else max(16, min(max_memory_mb, int(free * GPU_SHARE)))


def run_passes(session: ScoringSession, images: np.ndarray, passes: int, seed: int,
               save_passes: bool, run_plan: Plan) -> tuple[stats.PassStats, np.ndarray | None]:
    """All ``passes`` passes for ``images`` in chunks; merged stats and optional ``[N, T, C]``.

    On CUDA, fewer images than a call takes (the last batch, a batch with failed images) are
    padded with zero images to the plan's call size, whose rows are then dropped: every call has
    the same shape.
    """
    outputs = session.stat_outputs() + ([OUTPUT_PASSES] if save_passes else [])
    count_images = len(images)
    size = run_plan.call_images or run_plan.batch_size
    if session.on_cuda and 0 < count_images < size:
        images = np.concatenate([images, np.zeros((size - count_images, *images.shape[1:]),
                                                  images.dtype)])
    run = session.runner(images)
    merged = None
    kept = []
    for start, count in run_plan.chunks(passes):
        result = {name: value[:count_images] for name, value in
                  run(seed, start, count, outputs).items()}
        entropies = result.get(OUTPUT_ENTROPY_SUM, result.get(OUTPUT_LABEL_ENTROPY_SUM))
        chunk = stats.stats_from_outputs(count, result[OUTPUT_SUM], result[OUTPUT_M2], entropies,
                                         result.get(OUTPUT_VOTES))
        merged = chunk if merged is None else stats.merge_stats(merged, chunk)
        if save_passes:
            kept.append(result[OUTPUT_PASSES])
    return merged, (np.concatenate(kept, axis=1) if kept else None)
