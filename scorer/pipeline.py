"""Feed inference without stalls: read, hash and decode images in worker threads, in order.

:func:`iter_batches` yields :class:`Batch` objects in input order while the next ``prefetch``
batches decode in the background, so inference and decoding overlap and at most ``prefetch + 1``
batches of decoded pixels exist at once, however many images there are. Pillow, hashlib and
numpy release the GIL while they work, so threads scale on the decode.

The workers are daemon threads: closing the iterator (Ctrl-C, SIGTERM, an error downstream)
returns at once, even when a worker is stuck in a read that never returns (a hung network file
system), and such a thread cannot keep the process alive.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from scorer.contract import LAYOUTS, Preprocessing
from scorer.decode import DEFAULT_MAX_IMAGE_MB, DEFAULT_MAX_PIXELS, decode
from scorer.errors import ImageError
from scorer.inputs import DEFAULT_MAX_FILE_MB, ImageRef, image_key, read_file
from scorer.schema import STATUS_OK

DEFAULT_PREFETCH = 2


@dataclass(frozen=True)
class DecodeSettings:
    """How files become input rows: the model's preprocessing plus the safety limits."""

    pre: Preprocessing
    layout: str = "NHWC"
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft: bool = True
    max_file_bytes: int = DEFAULT_MAX_FILE_MB << 20
    max_image_bytes: int = DEFAULT_MAX_IMAGE_MB << 20

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {LAYOUTS}")

    @property
    def row_shape(self) -> tuple[int, int, int]:
        pre = self.pre
        if self.layout == "NCHW":
            return pre.channels, pre.height, pre.width
        return pre.height, pre.width, pre.channels


@dataclass
class Loaded:
    """One file after reading and decoding: its key, status, reason and pixels (ok rows)."""

    key: str = ""
    status: str = STATUS_OK
    reason: str = ""
    pixels: np.ndarray | None = None


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
    reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.refs)


def default_workers() -> int:
    """Decode threads to use by default: the CPUs this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def load(ref: ImageRef, settings: DecodeSettings) -> Loaded:
    """Read, hash and decode one file; a bad file gives its status instead of raising."""
    try:
        data = read_file(ref, settings.max_file_bytes)
    except ImageError as error:
        return Loaded(status=error.reason, reason=error.detail or error.reason)
    key = image_key(data)
    try:
        pixels = decode(data, settings.pre, settings.layout, max_pixels=settings.max_pixels,
                        draft=settings.draft, max_image_bytes=settings.max_image_bytes)
    except ImageError as error:
        return Loaded(key, error.reason, error.detail or error.reason)
    return Loaded(key, pixels=pixels)


def iter_batches(refs: Sequence[ImageRef], settings: DecodeSettings, batch_size: int,
                 workers: int, prefetch: int | None = None) -> Iterator[Batch]:
    """Read, hash and decode ``refs`` into batches, in input order.

    Results do not depend on ``workers`` or ``batch_size`` (beyond how rows are grouped).

    Args:
        refs: The files, in output order.
        settings: Preprocessing and limits.
        batch_size: Rows per batch (the last may be shorter).
        workers: Decode threads; 0 decodes in the caller's thread, one batch at a time.
        prefetch: Batches decoded ahead of the consumer (default 2); ignored when ``workers`` is 0.

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
    if workers == 0:
        return (assemble(chunk, [load(ref, settings) for ref in chunk], settings.row_shape)
                for chunk in chunks)
    return _threaded(chunks, lambda ref: load(ref, settings), settings.row_shape, workers,
                     prefetch)


class DaemonPool:
    """A minimal thread pool of daemon threads that never waits for its workers on shutdown."""

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"mcd-decode-{i}", daemon=True).start()
        self._workers = workers

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, function, argument = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(argument))
                except BaseException as error:  # delivered to the consumer by future.result()
                    future.set_exception(error)

    def submit(self, function: Callable, argument) -> Future:
        future: Future = Future()
        self._tasks.put((future, function, argument))
        return future

    def shutdown(self) -> None:
        for _ in range(self._workers):
            self._tasks.put(None)


def _threaded(chunks: Iterator[Sequence[ImageRef]], work: Callable[[ImageRef], Loaded],
              shape: tuple[int, int, int], workers: int, prefetch: int) -> Iterator[Batch]:
    pool = DaemonPool(workers)
    pending: deque[tuple[Sequence[ImageRef], list[Future]]] = deque()

    def submit_ahead(limit: int) -> None:
        while len(pending) < limit and (chunk := next(chunks, None)) is not None:
            pending.append((chunk, [pool.submit(work, ref) for ref in chunk]))

    try:
        submit_ahead(prefetch)
        while pending:
            chunk, futures = pending.popleft()
            submit_ahead(prefetch)
            yield assemble(chunk, [future.result() for future in futures], shape)
    finally:
        for _, futures in pending:
            for future in futures:
                future.cancel()
        pool.shutdown()


def assemble(chunk: Sequence[ImageRef], loaded: list[Loaded], shape: tuple[int, int, int]) -> Batch:
    ok_rows = [row for row, item in enumerate(loaded) if item.status == STATUS_OK]
    if ok_rows:
        images = np.stack([loaded[row].pixels for row in ok_rows])
    else:
        images = np.empty((0, *shape), dtype=np.float32)
    return Batch(refs=list(chunk), keys=[item.key for item in loaded],
                 status=[item.status for item in loaded], images=images,
                 ok_rows=np.asarray(ok_rows, dtype=np.int64),
                 reasons=[item.reason for item in loaded])
