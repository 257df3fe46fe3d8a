"""Feed inference without stalls: read, hash and decode images in workers, in order.

:func:`iter_batches` yields :class:`Batch` objects in input order while the next ``prefetch``
batches decode in the background, so inference and decoding overlap and at most ``prefetch + 1``
batches of decoded pixels exist at once, however many images there are. Each row is decoded
straight into its place in the batch (no per-image float arrays, no stacking).

The workers are threads, or processes (:mod:`scorer.images.workers`, rows in shared memory) when
``processes`` is set: libjpeg-turbo, hashlib and numpy release the GIL, but the Python around
them does not, and on a fast model the scoring thread needs that GIL too.

Worker threads are daemon threads: closing the iterator (Ctrl-C, SIGTERM, an error downstream)
returns at once, even when a worker is stuck in a read that never returns (a hung network file
system), and such a thread cannot keep the process alive. Worker processes are killed.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from scorer.images.listing import ImageRef
from scorer.images.load import DecodeSettings, Loaded, load, lower_priority
from scorer.images.workers import ProcessPool
from scorer.images.workers import available as processes_available
from scorer.results.schema import STATUS_OK

DEFAULT_PREFETCH = 2


@dataclass
class Batch:
    """One batch of consecutive input rows.

    Attributes:
        refs: The ``n`` files of the batch, in input order.
        keys: SHA-256 of each file's bytes, ``""`` when the file could not be read.
        status: ``"ok"`` or the :class:`~scorer.errors.ImageError` reason, per row.
        reasons: ``""`` or the failure in words, per row.
        images: ``float32`` ``[n_ok, H, W, C]`` (``NHWC``) or ``[n_ok, C, H, W]`` (``NCHW``), the
            decoded rows whose status is ``"ok"``, in order.
        ok_rows: ``int64`` ``[n_ok]``, the index in the batch of each row of ``images``.
    """

    refs: list[ImageRef]
    keys: list[str]
    status: list[str]
    images: np.ndarray
    ok_rows: np.ndarray
    reasons: list[str]

    def __len__(self) -> int:
        return len(self.refs)


def default_workers() -> int:
    """Decode workers to use by default: the CPUs this process may run on (no cap: on a GPU host
    decoding is what bounds a run)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus)


def iter_batches(refs: Sequence[ImageRef], settings: DecodeSettings, batch_size: int,
                 workers: int, prefetch: int | None = None, processes: bool = False,
                 pool: ProcessPool | None = None) -> Iterator[Batch]:
    """Read, hash and decode ``refs`` into batches, in input order.

    Results do not depend on ``workers``, ``processes`` or ``batch_size`` (beyond how rows are
    grouped).

    Args:
        refs: The files, in output order.
        settings: Preprocessing and limits.
        batch_size: Rows per batch (the last may be shorter).
        workers: Decode threads (or processes); 0 decodes in the caller's thread, one batch at a
            time.
        prefetch: Batches decoded ahead of the consumer (default 2); ignored when ``workers`` is 0.
        processes: Decode in ``workers`` processes (:mod:`scorer.images.workers`) instead of threads,
            where :func:`scorer.images.workers.available`; started at the first batch.
        pool: Processes already started (:func:`start_processes`) to use instead; the
            iterator closes them when it ends (or is closed).

    Raises:
        ValueError: An argument is out of range (raised at the call, not at the first batch).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    prefetch = DEFAULT_PREFETCH if prefetch is None else prefetch
    if prefetch < 1:
        raise ValueError(f"prefetch must be >= 1, got {prefetch}")
    chunks = (refs[start:start + batch_size] for start in range(0, len(refs), batch_size))
    rows = min(batch_size, len(refs)) or 1
    if pool is not None:
        return _in_processes(chunks, settings, rows, pool, prefetch)
    if workers == 0:
        return (_inline(chunk, settings) for chunk in chunks)
    if processes and processes_available():
        return _in_processes(chunks, settings, rows, None, prefetch, workers)
    return _threaded(chunks, settings, workers, prefetch)


def start_processes(workers: int, processes: bool) -> ProcessPool | None:
    """Start the decode processes :func:`iter_batches` will use, early (so that their start-up
    overlaps the model loading), or ``None`` when decoding will not run in processes."""
    if not processes or workers < 1 or not processes_available():
        return None
    return ProcessPool(workers)


def _inline(chunk: Sequence[ImageRef], settings: DecodeSettings) -> Batch:
    rows = np.empty((len(chunk), *settings.row_shape), np.float32)
    return assemble(chunk, [load(ref, settings, row) for ref, row in zip(chunk, rows, strict=True)],
                    rows)


class DaemonPool:
    """A minimal thread pool of daemon threads that never waits for its workers on shutdown."""

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"mcd-decode-{i}", daemon=True).start()
        self._workers = workers

    def _work(self) -> None:
        lower_priority(thread=True)
        while (task := self._tasks.get()) is not None:
            future, function, arguments = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*arguments))
                except BaseException as error:  # delivered to the consumer by future.result()
                    future.set_exception(error)

    def submit(self, function: Callable, *arguments) -> Future:
        future: Future = Future()
        self._tasks.put((future, function, arguments))
        return future

    def shutdown(self) -> None:
        for _ in range(self._workers):
            self._tasks.put(None)


def _threaded(chunks: Iterator[Sequence[ImageRef]], settings: DecodeSettings, workers: int,
              prefetch: int) -> Iterator[Batch]:
    pool = DaemonPool(workers)
    pending: deque[tuple[Sequence[ImageRef], np.ndarray, list[Future]]] = deque()

    def submit_ahead(limit: int) -> None:
        while len(pending) < limit and (chunk := next(chunks, None)) is not None:
            rows = np.empty((len(chunk), *settings.row_shape), np.float32)
            pending.append((chunk, rows, [pool.submit(load, ref, settings, row)
                                          for ref, row in zip(chunk, rows, strict=True)]))

    try:
        submit_ahead(prefetch)
        while pending:
            chunk, rows, futures = pending.popleft()
            submit_ahead(prefetch)
            yield assemble(chunk, [future.result() for future in futures], rows)
    finally:
        for _, _, futures in pending:
            for future in futures:
                future.cancel()
        pool.shutdown()


def _in_processes(chunks: Iterator[Sequence[ImageRef]], settings: DecodeSettings,
                  batch_size: int, pool: ProcessPool | None, prefetch: int,
                  workers: int = 0) -> Iterator[Batch]:
    pool = pool or ProcessPool(workers)
    pending: deque[tuple[Sequence[ImageRef], int, list]] = deque()
    free = list(range(prefetch))

    def submit_ahead() -> None:
        while free and (chunk := next(chunks, None)) is not None:
            slot = free.pop()
            pending.append((chunk, slot, pool.submit(slot, chunk)))

    try:
        pool.start(settings, batch_size, prefetch)
        submit_ahead()
        while pending:
            chunk, slot, tickets = pending.popleft()
            answers = pool.collect(tickets)
            loaded = [Loaded(key, status, reason) for _, key, status, reason in answers]
            batch = assemble(chunk, loaded, pool.slot(slot)[:len(chunk)], copy=True)
            free.append(slot)
            submit_ahead()
            yield batch
    finally:
        pool.close()


def assemble(chunk: Sequence[ImageRef], loaded: list[Loaded], rows: np.ndarray,
             copy: bool = False) -> Batch:
    """A batch from its files, their load results and their decoded ``rows`` (``[n, *row]``,
    the rows of failed files unspecified); ``copy`` the rows when ``rows`` will be reused."""
    ok_rows = [row for row, item in enumerate(loaded) if item.status == STATUS_OK]
    whole = len(ok_rows) == len(chunk)
    images = rows[ok_rows] if not whole else rows.copy() if copy else rows  # indexing copies
    return Batch(refs=list(chunk), keys=[item.key for item in loaded],
                 status=[item.status for item in loaded], images=images,
                 ok_rows=np.asarray(ok_rows, dtype=np.int64),
                 reasons=[item.reason for item in loaded])
