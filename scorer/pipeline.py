"""Feed inference without stalls: read, hash and decode images in a thread pool, in order.

:func:`iter_batches` yields :class:`Batch` objects in input order while the next ``prefetch``
batches decode in the background, so the consumer (inference) and decoding overlap and at most
``prefetch + 1`` batches of decoded pixels exist at once, however many images there are. Pillow,
hashlib and numpy release the GIL while they work, so threads scale on the decode.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from scorer.contract import LAYOUTS, Preprocessing
from scorer.errors import ImageError
from scorer.images import DEFAULT_MAX_PIXELS, ImageRef, decode, image_key, read_bytes

STATUS_OK = "ok"
DEFAULT_PREFETCH = 2

_Loaded = tuple[str, str, np.ndarray | None]  # key, status, pixels


@dataclass
class Batch:
    """One batch of consecutive input rows.

    Attributes:
        refs: The ``n`` files of the batch, in input order.
        keys: SHA-256 of each file's bytes, ``""`` when the file could not be read.
        status: ``"ok"`` or the :class:`~scorer.errors.ImageError` reason, per row.
        images: ``float32`` ``[n_ok, H, W, C]`` (``NHWC``) or ``[n_ok, C, H, W]`` (``NCHW``), the
            decoded rows whose status is ``"ok"``, in order.
        ok_rows: ``int64`` ``[n_ok]``, the index in the batch of each row of ``images``.
    """

    refs: list[ImageRef]
    keys: list[str]
    status: list[str]
    images: np.ndarray
    ok_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.refs)


def default_workers() -> int:
    """Decode threads to use by default: the CPUs this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def iter_batches(
    refs: Sequence[ImageRef],
    pre: Preprocessing,
    layout: str,
    batch_size: int,
    workers: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
    prefetch: int | None = None,
) -> Iterator[Batch]:
    """Read, hash and decode ``refs`` into batches, in input order.

    Results do not depend on ``workers`` or ``batch_size`` (beyond how rows are grouped). Closing
    the iterator early (``break``, an exception or ``KeyboardInterrupt`` in the consumer) cancels
    the queued work and returns once the images being decoded right now are done.

    Args:
        refs: The files, in output order.
        pre: Preprocessing from the model's metadata.
        layout: ``"NHWC"`` or ``"NCHW"``.
        batch_size: Rows per batch (the last may be shorter).
        workers: Decode threads; 0 decodes in the caller's thread, one batch at a time.
        max_pixels: Largest ``width * height`` accepted, see :func:`scorer.images.decode`.
        draft: Allow reduced-size JPEG decoding, see :func:`scorer.images.decode`.
        prefetch: Batches decoded ahead of the consumer (default 2); ignored when ``workers`` is 0.

    Raises:
        ValueError: An argument is out of range (raised at the call, not at the first batch).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    prefetch = DEFAULT_PREFETCH if prefetch is None else prefetch
    if prefetch < 1:
        raise ValueError(f"prefetch must be >= 1, got {prefetch}")

    def load(ref: ImageRef) -> _Loaded:
        return _load_one(ref, pre, layout, max_pixels, draft)

    shape = _row_shape(pre, layout)
    chunks = (refs[start : start + batch_size] for start in range(0, len(refs), batch_size))
    if workers == 0:
        return _inline_batches(chunks, load, shape)
    return _threaded_batches(chunks, load, shape, workers, prefetch)


def _load_one(
    ref: ImageRef, pre: Preprocessing, layout: str, max_pixels: int, draft: bool
) -> _Loaded:
    """Read, hash and decode one file; a bad file gives its status instead of raising."""
    try:
        data = read_bytes(ref)
    except ImageError as error:
        return "", error.reason, None
    key = image_key(data)
    try:
        pixels = decode(data, pre, layout, max_pixels=max_pixels, draft=draft)
    except ImageError as error:
        return key, error.reason, None
    return key, STATUS_OK, pixels


def _row_shape(pre: Preprocessing, layout: str) -> tuple[int, int, int]:
    if layout == "NCHW":
        return pre.channels, pre.height, pre.width
    return pre.height, pre.width, pre.channels


def _inline_batches(
    chunks: Iterator[Sequence[ImageRef]],
    load: Callable[[ImageRef], _Loaded],
    shape: tuple[int, int, int],
) -> Iterator[Batch]:
    for chunk in chunks:
        yield _assemble(chunk, [load(ref) for ref in chunk], shape)


def _threaded_batches(
    chunks: Iterator[Sequence[ImageRef]],
    load: Callable[[ImageRef], _Loaded],
    shape: tuple[int, int, int],
    workers: int,
    prefetch: int,
) -> Iterator[Batch]:
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mcd-decode")
    pending: deque[tuple[Sequence[ImageRef], list[Future[_Loaded]]]] = deque()

    def submit_ahead(limit: int) -> None:
        while len(pending) < limit:
            chunk = next(chunks, None)
            if chunk is None:
                return
            pending.append((chunk, [pool.submit(load, ref) for ref in chunk]))

    try:
        submit_ahead(prefetch)
        while pending:
            chunk, futures = pending.popleft()
            submit_ahead(prefetch)
            loaded = [future.result() for future in futures]
            yield _assemble(chunk, loaded, shape)
    finally:
        for _, futures in pending:
            for future in futures:
                future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _assemble(
    chunk: Sequence[ImageRef], loaded: list[_Loaded], shape: tuple[int, int, int]
) -> Batch:
    ok_rows = [row for row, (_, status, _) in enumerate(loaded) if status == STATUS_OK]
    if ok_rows:
        images = np.stack([loaded[row][2] for row in ok_rows])
    else:
        images = np.empty((0, *shape), dtype=np.float32)
    return Batch(
        refs=list(chunk),
        keys=[key for key, _, _ in loaded],
        status=[status for _, status, _ in loaded],
        images=images,
        ok_rows=np.asarray(ok_rows, dtype=np.int64),
    )
