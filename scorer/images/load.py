"""One input file -> one decoded row: read, hash, decode into its place in a batch.

:func:`load` is what every decode worker runs for each file, in a thread
(:mod:`scorer.images.batches`) or a worker process (:mod:`scorer.images.workers`); a bad file
gives its status and reason instead of raising.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

from scorer.contract import LAYOUTS, Preprocessing
from scorer.errors import ImageError
from scorer.images.decode import (
    DECODERS,
    DEFAULT_MAX_IMAGE_MB,
    DEFAULT_MAX_PIXELS,
    decode,
    output_shape,
)
from scorer.images.files import DEFAULT_MAX_FILE_MB, image_key, read_file
from scorer.images.listing import ImageRef
from scorer.results.schema import STATUS_OK

DECODE_NICENESS = 19
"""Decode workers run at the lowest CPU priority, so that they never preempt ONNX Runtime's
threads: a preempted thread holds up every other thread of a parallel operator. They get the
cores whenever ONNX Runtime does not use them, and all of them while it waits for a batch."""


@dataclass(frozen=True)
class DecodeSettings:
    """How files become input rows: the model's preprocessing plus the safety limits."""

    pre: Preprocessing
    layout: str = "NHWC"
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft: bool = True
    max_file_bytes: int = DEFAULT_MAX_FILE_MB << 20
    max_image_bytes: int = DEFAULT_MAX_IMAGE_MB << 20
    decoder: str = "auto"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {LAYOUTS}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder {self.decoder!r} is not one of {DECODERS}")

    @property
    def row_shape(self) -> tuple[int, int, int]:
        return output_shape(self.pre, self.layout)


@dataclass
class Loaded:
    """One file after reading and decoding: its key, status, reason and pixels (ok rows)."""

    key: str = ""
    status: str = STATUS_OK
    reason: str = ""
    pixels: np.ndarray | None = None


def lower_priority(thread: bool) -> None:
    """Give the calling thread (``thread``; Linux only, where a thread has its own niceness) or
    process :data:`DECODE_NICENESS`."""
    try:
        if thread and sys.platform == "linux":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)
        elif not thread:
            os.setpriority(os.PRIO_PROCESS, 0, DECODE_NICENESS)
    except (AttributeError, OSError):  # no priorities here: the workers run as they are
        pass


def load(ref: ImageRef, settings: DecodeSettings, out: np.ndarray | None = None) -> Loaded:
    """Read, hash and decode one file; a bad file gives its status instead of raising.

    ``out`` is where the row goes (``float32``, ``settings.row_shape``), e.g. its place in a batch.
    """
    try:
        data = read_file(ref, settings.max_file_bytes)
    except ImageError as error:
        return Loaded(status=error.reason, reason=error.detail or error.reason)
    key = image_key(data)
    try:
        pixels = decode(data, settings.pre, settings.layout, max_pixels=settings.max_pixels,
                        draft=settings.draft, max_image_bytes=settings.max_image_bytes,
                        decoder=settings.decoder, out=out)
    except ImageError as error:
        return Loaded(key, error.reason, error.detail or error.reason)
    return Loaded(key, pixels=pixels)
