"""Library entry point: score a folder (or list) of images with an mcd-export graph into HDF5.

files -> decoded batches (thread pool, :mod:`scorer.pipeline`) -> ONNX Runtime, passes in chunks
(:mod:`scorer.session`) -> sufficient statistics merged in float64 -> metrics (:mod:`scorer.metrics`)
-> rows appended to ``OUT.partial`` (:mod:`scorer.h5out`) -> renamed to ``OUT`` when complete.
"""

from __future__ import annotations

import contextlib
import json
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import onnxruntime as ort
import PIL

from scorer import metrics
from scorer.contract import OUTPUT_PASSES
from scorer.errors import ImageError, OutputError, ScorerError, ScorerUsageError
from scorer.h5out import ResultRows, ResultWriter, partial_path
from scorer.images import DEFAULT_MAX_PIXELS, ImageRef, image_key, read_bytes
from scorer.pipeline import Batch, default_workers, iter_batches
from scorer.session import ScoringSession, open_session

VERSION = "0.1.0"
PLAN_BATCH = 32
DEFAULT_BATCH = {"CPUExecutionProvider": 32, "CUDAExecutionProvider": 128}
"""Images per call when --batch-size is not given (capped by --max-memory). Measured on 2 CPU
cores (MobileNetV2 160x160, T=50): batch 16-32 runs at ~300 images/s in ~200-350 MiB, batch 205
at ~120 images/s in ~1.9 GiB; larger batches only pay off on a GPU."""
IDENTITY_ATTRS = ("model_sha256", "max_pixels", "jpeg_draft")

Progress = Callable[[int, int, int], None]


class ScoreInterrupted(ScorerError):
    """Ctrl-C or SIGTERM: the rows so far are in ``OUT.partial``; ``--resume`` continues."""


@dataclass(frozen=True)
class ScoreOptions:
    """Options of :func:`score`. ``batch_size``/``workers`` ``None`` means automatic."""

    passes: int = 50
    seed: int = 0
    batch_size: int | None = None
    device: str = "auto"
    save_passes: bool = False
    mode: str = "new"  # new | overwrite | resume
    workers: int | None = None
    max_memory_mb: int = 2048
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft: bool = True
    threads: int | None = None
    command: str = ""

    def check(self) -> None:
        if self.passes < 1:
            raise ScorerUsageError(f"--passes must be at least 1, got {self.passes}")
        if not 0 <= self.seed < 2**63:
            raise ScorerUsageError(f"--seed must be in 0..2**63-1, got {self.seed}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ScorerUsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_memory_mb < 16:
            raise ScorerUsageError(f"--max-memory must be at least 16 MB, got {self.max_memory_mb}")


@dataclass
class ScoreSummary:
    """What a run did, for the final summary line and ``--json-summary``."""

    output: str
    images: int
    scored: int
    failed: int
    resumed: int
    seconds: float
    provider: str
    notice: str
    batch_size: int
    pass_chunk: int
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**self.__dict__, "images_per_second": round(self.images_per_second, 2)}


@dataclass(frozen=True)
class Plan:
    """How a run splits its work: images per ONNX call and passes per call."""

    batch_size: int
    pass_chunk: int
    call_images: int = 0  # images per ONNX call (0: the whole batch); below batch_size only when
    # an explicit --batch-size does not fit --max-memory

    def chunks(self, passes: int) -> list[tuple[int, int]]:
        """``(start, count)`` of each pass chunk; depends on ``passes`` and the chunk size only."""
        return [(s, min(self.pass_chunk, passes - s)) for s in range(0, passes, self.pass_chunk)]


def plan(session: ScoringSession, options: ScoreOptions) -> Plan:
    """Choose the pass chunk (independent of the batch size, so results are too) and batch size.

    Memory per ONNX call is estimated as ``images * (per_image + chunk * per_image_pass)`` from the
    byte counts measured at export time. An explicit ``batch_size`` that does not fit is run in
    several calls of ``call_images`` images.
    """
    limit = options.max_memory_mb * 2**20
    per_image = max(1, session.metadata.bytes_per_image)
    per_pass = max(1, session.metadata.bytes_per_image_pass)
    chunk = int((limit / PLAN_BATCH - per_image) // per_pass)
    chunk = max(1, min(options.passes, chunk))
    fits = max(1, int(limit // (per_image + chunk * per_pass)))
    if options.batch_size is not None:
        return Plan(options.batch_size, chunk, min(options.batch_size, fits))
    batch = min(DEFAULT_BATCH.get(session.provider, PLAN_BATCH), fits)
    return Plan(batch, chunk, batch)


def score(
    images: Path | Sequence[ImageRef], out: Path, model: Path, options: ScoreOptions,
    progress: Progress | None = None, on_session: Callable[[ScoringSession, Plan], None] | None = None,
) -> ScoreSummary:
    """Score ``images`` (a folder, or refs from :func:`scorer.images.read_file_list`) into ``out``.

    Raises:
        ScorerUsageError: bad options, model, inputs or output (exit code 2).
        ScoreInterrupted: Ctrl-C or SIGTERM; the partial file is consistent and resumable.
        ScorerError: other failures (exit code 1).
    """
    from scorer.images import discover

    options.check()
    started = time.monotonic()
    session = open_session(model, options.device, options.threads)
    refs = discover(images) if isinstance(images, Path) else list(images)
    run_plan = plan(session, options)
    if on_session is not None:
        on_session(session, run_plan)
    meta = session.metadata
    has_labels = any(ref.label is not None for ref in refs)
    writer = ResultWriter.open(
        out, kind=meta.output_kind, num_outputs=meta.num_outputs, passes=options.passes,
        seed=options.seed, save_passes=options.save_passes, has_labels=has_labels,
        attrs=run_attributes(session, images, options, len(refs)), mode=options.mode,
        identity=IDENTITY_ATTRS,
    )
    with writer:
        resumed = writer.rows_done
        if resumed:
            check_resumed_prefix(writer.done_paths(), refs, out)
            check_resumed_keys(writer.done_column("key"), refs, out)
        failed = 0
        with interruptible():
            try:
                for batch in iter_batches(
                    refs[resumed:], meta.preprocessing, meta.layout, run_plan.batch_size,
                    default_workers() if options.workers is None else options.workers,
                    max_pixels=options.max_pixels, draft=options.draft,
                ):
                    writer.append(score_batch(session, batch, options, run_plan, has_labels))
                    failed += sum(status != "ok" for status in batch.status)
                    if progress is not None:
                        progress(writer.rows_done, len(refs), failed)
            except KeyboardInterrupt:
                writer.close()
                raise ScoreInterrupted(
                    f"interrupted after {writer.rows_done} of {len(refs)} images; the rows so far "
                    f"are in {partial_path(out)}; run again with --resume to continue"
                ) from None
        writer.finish({"end_time": now()})
    seconds = time.monotonic() - started
    failures = count_failures(out)
    return ScoreSummary(
        output=str(out), images=len(refs), scored=len(refs) - resumed,
        failed=sum(failures.values()), resumed=resumed, seconds=round(seconds, 3),
        provider=session.provider, notice=session.notice, batch_size=run_plan.batch_size,
        pass_chunk=run_plan.pass_chunk, failures=failures,
    )


def score_batch(
    session: ScoringSession, batch: Batch, options: ScoreOptions, run_plan: Plan, has_labels: bool
) -> ResultRows:
    """Run all passes for one batch and build its rows (failed images get NaN metrics)."""
    meta = session.metadata
    n = len(batch)
    values = metrics.failed_metrics(n, meta.num_outputs, meta.output_kind)
    passes = None
    if options.save_passes:
        passes = np.full((n, options.passes, meta.num_outputs), np.nan, np.float32)
    images = batch.images.reshape(len(batch.ok_rows), *meta.input_shape[1:])
    step = run_plan.call_images or len(images)
    for start in range(0, len(images), max(step, 1)):  # results are per image: splitting is exact
        rows = batch.ok_rows[start:start + step]
        stats, per_pass = run_passes(session, images[start:start + step], options, run_plan)
        for name, column in metrics.metrics_from_stats(stats, meta.output_kind).items():
            values[name][rows] = column
        if passes is not None:
            passes[rows] = per_pass
    labels = [ref.label for ref in batch.refs] if has_labels else None
    return ResultRows(
        path=[ref.path for ref in batch.refs], key=list(batch.keys), status=list(batch.status),
        label=labels, metrics=values, passes=passes,
    )


def run_passes(
    session: ScoringSession, images: np.ndarray, options: ScoreOptions, run_plan: Plan
) -> tuple[metrics.PassStats, np.ndarray | None]:
    """All ``options.passes`` passes for ``images`` in chunks; merged stats and optional passes."""
    outputs = session.stat_outputs() + ([OUTPUT_PASSES] if options.save_passes else [])
    merged = None
    kept = []
    for start, count in run_plan.chunks(options.passes):
        result = session.run(images, options.seed, start, count, outputs)
        stats = metrics.stats_from_outputs(
            count, result["pass_sum"], result["pass_m2"], result.get("entropy_sum"),
            result.get("votes"),
        )
        merged = stats if merged is None else metrics.merge_stats(merged, stats)
        if options.save_passes:
            kept.append(result[OUTPUT_PASSES])
    return merged, (np.concatenate(kept, axis=1) if kept else None)


def check_resumed_prefix(done: list[str], refs: Sequence[ImageRef], out: Path) -> None:
    """A resumed partial must hold exactly the first rows of this run's input list."""
    current = [ref.path for ref in refs[: len(done)]]
    if len(done) > len(refs) or done != current:
        mismatch = next((i for i, (a, b) in enumerate(zip(done, current, strict=False)) if a != b),
                        min(len(done), len(current)))
        raise OutputError(
            f"cannot resume {partial_path(out)}: its {len(done)} rows do not match the start of "
            f"this run's {len(refs)} inputs (first difference at row {mismatch}); the image "
            "folder changed since the interrupted run, so use --overwrite to start again"
        )


def check_resumed_keys(
    keys: list[str], refs: Sequence[ImageRef], out: Path, samples: int = 8
) -> None:
    """Spot-check that files already scored still have the bytes they had (first, last, and a few
    rows between): a replaced image under the same name must not be silently kept."""
    rows = sorted({round(i * (len(keys) - 1) / max(samples - 1, 1)) for i in range(samples)})
    for row in rows:
        if not keys[row]:
            continue  # unreadable then; its status says so
        try:
            now_key = image_key(read_bytes(refs[row]))
        except ImageError:
            now_key = ""
        if now_key != keys[row]:
            raise OutputError(
                f"cannot resume {partial_path(out)}: {refs[row].path!r} changed since the "
                "interrupted run (its SHA-256 differs); use --overwrite to score everything again"
            )


def run_attributes(
    session: ScoringSession, images: Path | Sequence[ImageRef], options: ScoreOptions, count: int
) -> dict:
    """Root attributes: provenance of the run (model, versions, command, time)."""
    meta = session.metadata
    return {
        "model_sha256": session.model_sha256,
        "model_metadata": json.loads(meta.to_json()),
        "class_names": list(meta.class_names) if meta.class_names else [],
        "execution_provider": session.provider,
        "device_requested": options.device,
        "images_root": str(images) if isinstance(images, Path) else "",
        "input_count": count,
        "max_pixels": options.max_pixels,
        "jpeg_draft": options.draft,
        "versions": {
            "mcd-score": VERSION, "onnxruntime": ort.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "Pillow": PIL.__version__, "python": platform.python_version(),
        },
        "command": options.command,
        "start_time": now(),
    }


def count_failures(out: Path, rows_per_read: int = 65536) -> dict[str, int]:
    """Failure reasons and their counts in a finished file (read in slices, memory stays flat)."""
    counts: dict[str, int] = {}
    with h5py.File(out, "r") as file:
        status = file["status"].asstr()
        for start in range(0, status.shape[0], rows_per_read):
            for reason in status[start:start + rows_per_read]:
                if reason != "ok":
                    counts[reason] = counts.get(reason, 0) + 1
    return counts


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while scoring (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
