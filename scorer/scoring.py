"""Library entry point: score a folder (or list) of images with an mcd-export graph into HDF5.

files -> decoded batches (:mod:`scorer.images`) -> ONNX Runtime, passes in chunks
(:mod:`scorer.model`) -> metrics (:mod:`scorer.metrics`), as rows (:mod:`scorer.engine`) ->
committed to ``OUT.parts/`` (:mod:`scorer.rundir`) -> merged into ``OUT`` when complete
(:mod:`scorer.results`). A Ray run (:mod:`scorer.distributed`) shares :func:`set_up` and
:func:`summarize` and calls :func:`score` for each shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnxruntime as ort
import PIL

from scorer import __version__
from scorer.engine import score_batch
from scorer.errors import ImageError, OutputError, ScoreInterrupted, ScorerUsageError
from scorer.images import jpeg
from scorer.images.batches import default_workers, iter_batches, start_processes
from scorer.images.decode import DECODERS, DEFAULT_MAX_IMAGE_MB, DEFAULT_MAX_PIXELS
from scorer.images.files import DEFAULT_MAX_FILE_MB, image_key, read_file
from scorer.images.listing import ImageIndex, ImageRef, discover, label_hint
from scorer.images.load import DecodeSettings
from scorer.model.passes import Plan, memory_budget, plan
from scorer.model.session import ScoringSession, open_session
from scorer.results.reader import open_results
from scorer.results.schema import STATUS_OK, FileHeader
from scorer.rundir.child import prestart
from scorer.rundir.folder import RunDir, parts_path, refuse_existing
from scorer.rundir.merge import MODULE as MERGE_MODULE
from scorer.rundir.segments import FLUSH_SECONDS

Progress = Callable[[int, int, int], None]

# Decode processes cost ~0.25 s to start and save 10-25% of decoding time (MNIST-sized models;
# 1-8% for MobileNet): below about 2,000 images threads finish first (1,024 PNG digits, T=50:
# 0.74-0.77 s in threads, 0.93-1.00 s in processes).
PROCESSES_FROM_IMAGES = 2048


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
    max_file_mb: int = DEFAULT_MAX_FILE_MB
    max_image_mb: int = DEFAULT_MAX_IMAGE_MB
    draft: bool = True
    decoder: str = "auto"  # auto (libjpeg-turbo for plain JPEGs, same pixels) | pillow
    decode_processes: bool | None = None  # processes (scorer.images.workers), threads; None: by size
    threads: int | None = None
    tf32: bool = False  # CUDA: TF32 math (faster on Ampere and newer, ~1e-3 relative rounding)
    commit_seconds: float = FLUSH_SECONDS
    merge_in_child: bool = True  # False in Ray workers: see scorer.rundir.folder.RunDir.finish
    command: str = ""

    def check(self) -> None:
        for name, flag, low in (("passes", "--passes", 1), ("batch_size", "--batch-size", 1),
                                ("max_memory_mb", "--max-memory", 16),
                                ("max_file_mb", "--max-file-size", 1),
                                ("max_image_mb", "--max-image-memory", 1),
                                ("max_pixels", "--max-pixels", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ScorerUsageError(f"{flag} must be at least {low}, got {value}")
        if not self.commit_seconds > 0:
            raise ScorerUsageError(f"--commit-every must be positive, got {self.commit_seconds}")
        if not 0 <= self.seed < 2**63:
            raise ScorerUsageError(f"--seed must be in 0..2**63-1, got {self.seed}")
        if self.decoder not in DECODERS:
            raise ScorerUsageError(f"--decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")


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
    cuda_fallback: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**self.__dict__, "images_per_second": round(self.images_per_second, 2)}


@dataclass(frozen=True)
class Started:
    """What :func:`score` tells its ``on_start`` callback before the first batch.

    ``where`` says what runs the passes (``running on CPU``, or the Ray cluster).
    """

    where: str
    plan: Plan
    images: int
    resumed: int
    warnings: list[str]


@dataclass
class RunSetup:
    """What a run is before its first image: the inputs, the model and what the output records.

    Made by :func:`set_up` for a local run and for a Ray driver alike.
    """

    refs: ImageIndex
    notes: list[str]  # hints for the user about the inputs
    session: ScoringSession
    plan: Plan
    header: FileHeader
    identity: dict


def list_inputs(images: Path | Sequence[ImageRef]) -> tuple[ImageIndex, list[str]]:
    """The inputs of a run (a folder is discovered, refs are taken as they are) and any hint."""
    if not isinstance(images, Path):
        return ImageIndex.of(images), []
    refs = discover(images)
    hint = label_hint(refs, images)
    return refs, [hint] if hint else []


def set_up(images: Path | Sequence[ImageRef], refs: ImageIndex, notes: list[str],
           session: ScoringSession, options: ScoreOptions,
           has_labels: bool | None = None) -> RunSetup:
    """The plan, results-file header and run identity of scoring ``refs`` with ``session``."""
    run_plan = plan(session.metadata, options.passes, memory_budget(session, options.max_memory_mb),
                    options.batch_size, session.provider)
    header = file_header(session, options, refs, images, run_plan, has_labels)
    return RunSetup(refs, notes, session, run_plan, header,
                    run_identity(session, options, refs, run_plan))


def summarize(out: Path, setup: RunSetup, resumed: int, started: float, provider: str,
              notice: str, warnings: Sequence[str] = ()) -> ScoreSummary:
    """The summary of a finished run, its failures counted in the written file."""
    failures = count_failures(Path(out))
    return ScoreSummary(
        output=str(out), images=len(setup.refs), scored=len(setup.refs) - resumed,
        failed=sum(failures.values()), resumed=resumed,
        seconds=round(time.monotonic() - started, 3), provider=provider, notice=notice,
        batch_size=setup.plan.batch_size, pass_chunk=setup.plan.pass_chunk, failures=failures,
        cuda_fallback=setup.session.cuda_fallback, warnings=[*setup.notes, *warnings])


def score(
    images: Path | Sequence[ImageRef], out: Path, model: Path | ScoringSession,
    options: ScoreOptions, progress: Progress | None = None,
    on_start: Callable[[Started], None] | None = None, has_labels: bool | None = None,
) -> ScoreSummary:
    """Score ``images`` (a folder, or refs from :func:`scorer.images.listing.read_file_list`)
    into ``out``.

    ``model`` is the ``.onnx`` file, or a session already open (a worker scoring many shards
    keeps one). ``has_labels`` overrides whether the file has a ``label`` dataset (by default:
    when some image has a label), so that the parts of a sharded run all have the same datasets.

    Raises:
        ScorerUsageError: bad options, model, inputs or output (exit code 2).
        OutputWriteError: the output could not be written (exit code 4); resumable.
        ScoreInterrupted: Ctrl-C or SIGTERM; the committed rows are kept for ``--resume``.
        ScorerError: other failures (exit code 1).
    """
    options.check()
    started = time.monotonic()
    out = Path(out)
    refuse_existing(out, options.mode)  # before anything slow starts
    refs, notes = list_inputs(images)
    workers = default_workers() if options.workers is None else options.workers
    processes = options.decode_processes
    if processes is None:
        processes = len(refs) >= PROCESSES_FROM_IMAGES
    pool = start_processes(workers, processes)  # starts while the model loads
    if options.merge_in_child:
        prestart(MERGE_MODULE)  # the final merge's process, ready when the rows are
    session = model if isinstance(model, ScoringSession) else open_session(
        model, options.device, options.threads, tf32=options.tf32,
        max_memory_mb=options.max_memory_mb)
    setup = set_up(images, refs, notes, session, options, has_labels)
    run_plan = setup.plan
    with RunDir.open(out, setup.header, setup.identity, options.mode) as run:
        writer = run.writer(flush_seconds=options.commit_seconds)
        resumed = writer.rows_done
        check_resumed(run, refs, resumed, options.max_file_mb << 20)
        if on_start is not None:
            on_start(Started(session.notice, run_plan, len(refs), resumed, notes))
        settings = decode_settings(session, options)
        failed = 0
        with interruptible():
            try:
                for batch in iter_batches(refs[resumed:], settings, run_plan.batch_size, workers,
                                          pool=pool):
                    columns = score_batch(session, batch, options.passes, options.seed,
                                          options.save_passes, run_plan)
                    writer.append(columns, len(batch))
                    failed += sum(status != STATUS_OK for status in columns["status"])
                    if progress is not None:
                        progress(writer.rows_done, len(refs), failed)
                writer.flush()
                run.finish({"end_time": now()}, in_child=options.merge_in_child)
            except KeyboardInterrupt:
                writer.flush()
                raise ScoreInterrupted(
                    f"interrupted after {writer.rows_done} of {len(refs)} images; the rows so "
                    f"far are kept in {parts_path(out)}; run again with --resume to continue"
                ) from None
    return summarize(out, setup, resumed, started, session.provider, session.notice)


def decode_settings(session: ScoringSession, options: ScoreOptions) -> DecodeSettings:
    meta = session.metadata
    return DecodeSettings(meta.preprocessing, meta.layout, options.max_pixels, options.draft,
                          options.max_file_mb << 20, options.max_image_mb << 20, options.decoder)


def inputs_digest(refs: Sequence[ImageRef]) -> str:
    """SHA-256 of the ordered input paths and labels: a resumed run must have the same inputs."""
    digest = hashlib.sha256()
    items = refs.digest_items() if isinstance(refs, ImageIndex) else (
        (ref.path.encode("utf-8", "surrogateescape"),
         (ref.label or "").encode("utf-8", "surrogateescape")) for ref in refs)
    for path, label in items:
        digest.update(path + b"\0")
        digest.update(label + b"\0")
    return digest.hexdigest()


def run_identity(session: ScoringSession, options: ScoreOptions, refs: Sequence[ImageRef],
                 run_plan: Plan) -> dict:
    """What must not change between an interrupted run and its ``--resume``.

    ``pass_chunk`` (set by ``--max-memory``) is included because a different chunking changes
    float rounding; the batch size and workers are not (results do not depend on them).
    """
    return {"model_sha256": session.model_sha256, "passes": options.passes,
            "seed": options.seed, "save_passes": options.save_passes,
            "pass_chunk": run_plan.pass_chunk, "max_pixels": options.max_pixels,
            "jpeg_draft": options.draft, "max_file_mb": options.max_file_mb,
            "max_image_mb": options.max_image_mb, "input_count": len(refs),
            "inputs_sha256": inputs_digest(refs)}


def session_attrs(session: ScoringSession, device: str) -> dict[str, Any]:
    """The results attributes that say which model ran where and how (files and arrays alike)."""
    return {
        "model_sha256": session.model_sha256,
        "model_metadata": json.loads(session.metadata.to_json()),
        "execution_provider": session.provider,
        "execution_provider_options": json.dumps(session.provider_options, sort_keys=True),
        "cuda_fallback": session.cuda_fallback,
        "device_requested": device,
    }


def file_header(session: ScoringSession, options: ScoreOptions, refs: Sequence[ImageRef],
                images: Path | Sequence[ImageRef], run_plan: Plan,
                has_labels: bool | None = None) -> FileHeader:
    meta = session.metadata
    attrs = {
        **session_attrs(session, options.device),
        "images_root": str(images) if isinstance(images, Path) else "",
        "input_count": len(refs),
        "max_pixels": options.max_pixels, "max_file_mb": options.max_file_mb,
        "max_image_mb": options.max_image_mb, "jpeg_draft": options.draft,
        "pass_chunk": run_plan.pass_chunk,
        "versions": library_versions(),
        "command": options.command,
        "start_time": now(),
    }
    return FileHeader(meta.output_kind, meta.num_outputs, options.passes, options.seed,
                      options.save_passes,
                      any_labels(refs) if has_labels is None else has_labels,
                      tuple(meta.class_names or ()), attrs)


def any_labels(refs: Sequence[ImageRef]) -> bool:
    """Whether any input has a label (the compact index knows without making refs)."""
    if isinstance(refs, ImageIndex):
        return refs.has_labels
    return any(ref.label is not None for ref in refs)


def check_resumed(run: RunDir, refs: Sequence[ImageRef], done: int, max_bytes: int,
                  samples: int = 8) -> None:
    """The committed rows must be the first rows of this input list, and a spot check of their
    files (first, last and a few between) must still have the bytes they had."""
    if not done:
        return
    from scorer.rundir.segments import iter_columns

    spots = sorted({round(i * (done - 1) / max(samples - 1, 1)) for i in range(samples)})
    keys: dict[int, str] = {}
    row = 0  # compared segment by segment: nothing per row is kept but the spot checks' keys
    for columns in iter_columns(run.committed(), ("path", "key")):
        committed = columns["path"]
        current = [ref.path for ref in refs[row:row + len(committed)]]
        if row + len(committed) > len(refs) or list(committed) != current:
            first = next((i for i, (a, b) in enumerate(zip(committed, current, strict=False))
                          if a != b), min(len(committed), len(current)))
            raise OutputError(
                f"cannot resume {run.path}: its {done} rows do not match the start of this run's "
                f"{len(refs)} inputs (first difference at row {row + first}); the inputs changed "
                "since the interrupted run, so use --overwrite")
        keys.update((i, columns["key"][i - row]) for i in spots if row <= i < row + len(committed))
        row += len(committed)
    if row != done:
        raise OutputError(f"cannot resume {run.path}: its segments hold {row} rows, not the {done} "
                          "committed; use --overwrite")
    for row in spots:
        if keys[row]:
            try:
                now_key = image_key(read_file(refs[row], max_bytes))
            except ImageError:
                now_key = ""
            if now_key != keys[row]:
                raise OutputError(f"cannot resume {run.path}: {refs[row].path!r} changed since "
                                  "the interrupted run (its SHA-256 differs); use --overwrite")


def count_failures(out: Path, rows_per_read: int = 65536) -> dict[str, int]:
    """Failure reasons and their counts in a finished file (read in slices, memory stays flat)."""
    counts: dict[str, int] = {}
    with open_results(out) as file:
        status = file["status"].asstr()
        for start in range(0, status.shape[0], rows_per_read):
            for reason in status[start:start + rows_per_read]:
                if reason != STATUS_OK:
                    counts[reason] = counts.get(reason, 0) + 1
    return counts


def now(timestamp: float | None = None) -> str:
    """The time (now, or ``timestamp`` from :func:`time.time`) as recorded in results files."""
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """The versions of what computes and writes the numbers, recorded in every results file."""
    return {"mcd-score": __version__, "onnxruntime": ort.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "Pillow": PIL.__version__, "simplejpeg": jpeg.version(),
            "python": platform.python_version()}


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


__all__ = ["ScoreOptions", "ScoreSummary", "Started", "score"]
