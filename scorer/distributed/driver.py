"""``mcd-score IMAGES OUT.h5 --ray``: shards scored by Ray actors, stitched into one results file.

The input list (discovery as in a local run: same order, same filters) is cut into shards
(:mod:`scorer.distributed.shards`). Each shard becomes one part file in ``OUT.parts/``, written by
:func:`scorer.scoring.score` in a Ray actor that keeps one ONNX Runtime session
(:mod:`scorer.distributed.worker`), with the run's crash safety: rows are committed as they are
scored. A worker that dies (SIGKILL, a lost node) is restarted by Ray and its shard is given out
again once an actor is back (:mod:`scorer.distributed.scheduler`); the new attempt resumes from
the shard's committed rows, so the result is the same. A shard that fails more than ``retries``
times, or a run left without a worker, stops with an error naming the shards; everything done so
far stays for ``--resume``, and nothing is dropped. The parts are then stitched into ``OUT`` with
HDF5 virtual datasets (relative paths) or, with ``consolidate``, copied into one plain file.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scorer.distributed.scheduler import Scheduler, ShardsFailed, death_reason
from scorer.distributed.shards import plan_shards, rows_committed, shard_rows
from scorer.distributed.worker import ShardWorker
from scorer.errors import ScoreInterrupted, ScorerError, ScorerUsageError
from scorer.images.listing import ImageRef
from scorer.model.session import open_session
from scorer.rundir.folder import RunDir, parts_path, refuse_existing
from scorer.scoring import (
    Progress,
    ScoreOptions,
    ScoreSummary,
    Started,
    any_labels,
    interruptible,
    list_inputs,
    now,
    set_up,
    summarize,
)

DEFAULT_RESTART_WAIT = 300.0  # seconds an actor may take to start or restart


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray.

    Attributes:
        address: ``"auto"`` (a running cluster: ``RAY_ADDRESS`` or the local one, else a new local
            one), ``"local"`` (always a new local cluster) or a cluster address.
        workers: Actors; default: the cluster's CPUs / ``cpus_per_worker`` (and GPUs).
        cpus_per_worker: CPUs reserved per actor: its ONNX Runtime threads on the CPU, its
            decoders on a GPU.
        gpus_per_worker: GPUs per actor (0: CPU only).
        shard_rows: Images per shard; default from the number of images and workers.
        retries: Attempts per shard after the first, when its worker dies or it fails; only
            attempts that ran on a live actor count (not the calls Ray refuses while it
            restarts one).
        restart_wait: Seconds an actor may take to start, or to come back after it died, before
            it is given up (the run goes on with the others; with none left it stops, naming
            the shards not done).
        consolidate: Copy the parts into one plain OUT instead of stitching them.
    """

    address: str = "auto"
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    shard_rows: int | None = None
    retries: int = 3
    restart_wait: float = DEFAULT_RESTART_WAIT
    consolidate: bool = False


def score_on_ray(
    images: Path | Sequence[ImageRef], out: Path, model: Path, options: ScoreOptions,
    ray_options: RayOptions, progress: Progress | None = None,
    on_start: Callable[[Started], None] | None = None,
) -> ScoreSummary:
    """Score ``images`` into ``out`` on a Ray cluster; same results as :func:`scorer.score`.

    Raises:
        ScorerUsageError: As a local run, and when workers cannot read the images.
        ShardsFailed: Some shards failed beyond their retries (resumable).
        ScoreInterrupted: Ctrl-C or SIGTERM; the Ray work is stopped, the output is resumable.
    """
    options.check()
    worker_device(options.device, ray_options.gpus_per_worker)  # refuse cuda without GPUs now
    started = time.monotonic()
    out = Path(out)
    refuse_existing(out, options.mode)
    refs, notes = list_inputs(images)
    session = open_session(Path(model), "cpu", 1)  # metadata, plan and hash: workers score
    ray, owned = connect(ray_options.address)
    try:
        workers = worker_count(ray, ray_options)
        rows = shard_rows(len(refs), workers, ray_options.shard_rows)
        shards = plan_shards(len(refs), rows)
        has_labels = any_labels(refs)
        setup = set_up(images, refs, notes, session, options, has_labels)
        header = dataclasses.replace(setup.header, attrs={**setup.header.attrs, "ray": {
            "workers": workers, "shard_rows": rows, "shards": len(shards),
            "stitched": not ray_options.consolidate}})
        identity = {**setup.identity, "shard_rows": rows}
        with RunDir.open(out, header, identity, options.mode) as run:
            parts = {s.index: run.part_path(s.index) for s in shards}
            todo = [s for s in shards if not parts[s.index].exists()]
            finished = len(refs) - sum(len(s) for s in todo)  # rows of the finished shards
            resumed = finished + sum(rows_committed(parts[s.index]) for s in todo)
            if on_start is not None:
                where = (f"running on Ray: {workers} workers, {len(shards)} shards of up to {rows} "
                         "images")
                on_start(Started(where, setup.plan, len(refs), resumed, notes))
            with interruptible():
                try:
                    actors = start_actors(ray, ray_options, workers, model, options)
                    scheduler = Scheduler(ray, actors, refs, parts, has_labels,
                                          ray_options.retries, ray_options.restart_wait, progress)
                    retried = scheduler.run(todo, finished)
                    run.finish({"end_time": now(), **scheduler.provider_attrs()},
                               [(parts[s.index], len(s)) for s in shards],
                               consolidate=ray_options.consolidate)
                except KeyboardInterrupt:
                    raise ScoreInterrupted(
                        f"interrupted; the finished shards and the rows scored so far are kept "
                        f"in {parts_path(out)}; run again with --resume to continue"
                    ) from None
    finally:
        if owned:
            ray.shutdown()
    return summarize(out, setup, resumed, started, f"Ray ({workers} workers)",
                     f"running on Ray, {workers} workers, {len(shards)} shards of {rows} images",
                     [f"{retried} shard attempts were retried"] if retried else [])


def connect(address: str):
    """Import Ray and connect; returns ``(ray, owned)``, ``owned`` when this call started Ray."""
    try:
        import ray
    except ImportError as error:
        raise ScorerError("--ray needs Ray: pip install 'mcd-score[ray]'") from error
    if ray.is_initialized():
        return ray, False
    kwargs = {"include_dashboard": False, "log_to_driver": False,
              "logging_level": logging.ERROR, "configure_logging": True}
    try:
        ray.init(address=None if address == "auto" else address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ScorerError(f"cannot start or reach the Ray cluster {address!r}: {error}") from error
    return ray, True


def worker_count(ray, ray_options: RayOptions) -> int:
    """Actors to start: as asked, else as many as the cluster's CPUs (and GPUs) allow."""
    if ray_options.workers:
        return ray_options.workers
    resources = ray.cluster_resources()
    count = int(resources.get("CPU", 1) // max(ray_options.cpus_per_worker, 1e-9))
    if ray_options.gpus_per_worker:
        count = min(count, int(resources.get("GPU", 0) // ray_options.gpus_per_worker))
    return max(1, count)


def start_actors(ray, ray_options: RayOptions, workers: int, model: Path,
                 options: ScoreOptions) -> list:
    """``workers`` actors (:class:`ShardWorker`), each opening its own session; Ray restarts one
    that dies, without limit (the scheduler bounds the wait)."""
    threads, decode = worker_threads(ray_options, options.workers)
    actor = ray.remote(num_cpus=ray_options.cpus_per_worker,
                       num_gpus=ray_options.gpus_per_worker, max_restarts=-1)(ShardWorker)
    worker_options = dataclasses.replace(
        options, workers=decode, device=worker_device(options.device, ray_options.gpus_per_worker))
    return [actor.remote(str(Path(model).absolute()), worker_options, threads)
            for _ in range(workers)]


def worker_device(device: str, gpus_per_worker: float) -> str:
    """The device a worker opens: the CPU when it was given no GPU (Ray 2.60 leaves
    ``CUDA_VISIBLE_DEVICES`` as it is for actors that asked for none, so ``auto`` would open a CUDA
    session on a GPU it was not given)."""
    if gpus_per_worker > 0:
        return device
    if device == "cuda":
        raise ScorerUsageError("--device cuda with --ray needs --ray-gpus-per-worker above 0")
    return "cpu"


def worker_threads(ray_options: RayOptions, workers: int | None) -> tuple[int, int]:
    """``(ONNX Runtime threads, decode workers)`` of an actor with its CPUs: a CPU worker gives
    them to ONNX Runtime and decodes in one thread; a GPU worker, whose ONNX Runtime threads idle
    while the GPU runs, gives them to decoding. ``--workers`` sets the decoders either way."""
    cpus = max(1, int(ray_options.cpus_per_worker))
    if ray_options.gpus_per_worker > 0:
        return 1, cpus if workers is None else workers
    return cpus, 1 if workers is None else workers


__all__ = ["DEFAULT_RESTART_WAIT", "RayOptions", "ShardsFailed", "death_reason", "score_on_ray",
           "start_actors", "worker_device", "worker_threads"]
