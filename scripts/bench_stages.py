"""Where the end-to-end time goes: the stage breakdown printed by scripts/bench.py.

Two views, both measured on the benchmark's own files:

- :func:`image_costs`: CPU milliseconds per image of each step of turning a file into a row,
  one thread, in this process: read, SHA-256, libjpeg-turbo decode (DCT-scaled), resize and
  colour conversion, normalisation, and, for comparison, the Pillow-only decode that mcd-score
  used before (``--decoder pillow``); then the CPU per image of the whole decode pipeline in
  worker threads and in worker processes (with their start-up and the pipes, i.e. the IPC).
- :class:`Stages`: the scoring thread's wall time in one :func:`scorer.score` run, by stage:
  start-up (listing, session, plan, run folder), waiting for decoded batches (idle), ONNX
  Runtime, metrics and rows, segment commits, and the final HDF5 merge.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

import scorer.model.session
import scorer.rundir.folder
import scorer.rundir.segments
import scorer.scoring
from scorer.contract import Preprocessing
from scorer.images import decode as decode_module
from scorer.images import jpeg
from scorer.images.batches import iter_batches
from scorer.images.files import image_key, read_file
from scorer.images.listing import ImageRef
from scorer.images.load import DecodeSettings

STAGES = ("start-up", "wait for batch", "onnx runtime", "metrics + rows", "segment commits",
          "final merge", "other")


def _cpu_ms(function, items: Sequence, repeat: int = 2) -> float:
    """Best CPU milliseconds per item of ``function`` over ``items``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for item in items:
            function(item)
        best = min(best, (time.process_time() - start) / len(items))
    return best * 1e3


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def pipeline_cpu_ms(refs: Sequence[ImageRef], settings: DecodeSettings, processes: bool) -> float:
    """CPU milliseconds per image of :func:`iter_batches` (this process and its children)."""
    start, children = time.process_time(), _children_cpu()
    for _ in iter_batches(refs, settings, 32, 2, processes=processes):
        pass
    spent = time.process_time() - start + _children_cpu() - children
    return spent / len(refs) * 1e3


def image_costs(refs: Sequence[ImageRef], pre: Preprocessing) -> dict[str, float]:
    """CPU milliseconds per image of each decoding step (see the module docstring): the single
    steps on the first 300 files, the pipelines on all (their start-up included)."""
    pipelines = refs
    refs = refs[:300]
    data = [read_file(ref) for ref in refs]
    info = jpeg.probe(data[0])
    gray = info.gray or pre.color_mode == "grayscale"
    scale = jpeg.draft_scale(info, pre.width, pre.height)
    pixels = jpeg.decode_pixels(data[0], info, gray, scale)
    row = np.empty(decode_module.output_shape(pre, "NHWC"), np.float32)
    resized = decode_module._resize_8bit(pixels, pre)
    settings = DecodeSettings(pre)
    return {
        "read": _cpu_ms(read_file, refs),
        "hash (SHA-256)": _cpu_ms(image_key, data),
        "jpeg markers + EXIF": _cpu_ms(jpeg.probe, data),
        "libjpeg-turbo decode": _cpu_ms(lambda d: jpeg.decode_pixels(d, info, gray, scale), data),
        "resize + colour": _cpu_ms(lambda _: decode_module._resize_8bit(pixels, pre), data),
        "normalise": _cpu_ms(lambda _: decode_module.normalise(resized, pre, "NHWC", row), data),
        "decode, all steps": _cpu_ms(lambda d: decode_module.decode(d, pre, "NHWC", out=row), data),
        "decode, Pillow only (before)": _cpu_ms(
            lambda d: decode_module.decode(d, pre, "NHWC", decoder="pillow"), data),
        "pipeline, 2 threads": pipeline_cpu_ms(pipelines, settings, processes=False),
        "pipeline, 2 processes": pipeline_cpu_ms(pipelines, settings, processes=True),
    }


class Stages:
    """Wraps the functions :func:`scorer.score` calls, summing the scoring thread's wall time."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.total = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        patches = [(scorer.scoring, "open_session", "start-up"),
                   (scorer.scoring, "discover", "start-up"),
                   (scorer.scoring.RunDir, "open", "start-up"),
                   (scorer.scoring, "score_batch", "metrics + rows"),
                   (scorer.rundir.segments.SegmentWriter, "append", "segment commits"),
                   (scorer.rundir.segments.SegmentWriter, "flush", "segment commits"),
                   (scorer.rundir.folder.RunDir, "finish", "final merge")]
        originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
        for owner, name, stage in patches:
            setattr(owner, name, self._timed(owner.__dict__[name], stage))
        real_iter = scorer.scoring.iter_batches
        scorer.scoring.iter_batches = lambda *a, **k: self._waited(real_iter(*a, **k))
        session_class = scorer.model.session.ScoringSession
        real_runner = session_class.__dict__["runner"]
        session_class.runner = lambda session, images: self._timed(
            real_runner(session, images), "onnx runtime")  # each pass chunk's ONNX Runtime call
        start = time.perf_counter()
        try:
            yield
        finally:
            self.total = time.perf_counter() - start
            scorer.scoring.iter_batches = real_iter
            session_class.runner = real_runner
            for owner, name, original in originals:
                setattr(owner, name, original)
            self.seconds["metrics + rows"] -= self.seconds["onnx runtime"]
            self.seconds["other"] = self.total - sum(v for k, v in self.seconds.items() if k != "other")

    def _timed(self, function, stage: str):
        if isinstance(function, classmethod | staticmethod):
            inner = function.__func__
            wrapped = self._timed(inner, stage)
            return type(function)(wrapped)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
        return timed

    def _waited(self, batches: Iterator) -> Iterator:
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.seconds["wait for batch"] += time.perf_counter() - start
            yield batch

    def shares(self) -> dict[str, float]:
        return {stage: seconds / self.total for stage, seconds in self.seconds.items()}


def score_with_stages(refs: Sequence[ImageRef], out: Path, model: Path,
                      options: scorer.scoring.ScoreOptions) -> tuple[float, Stages]:
    """One instrumented :func:`scorer.score` run: (seconds, stages)."""
    stages = Stages()
    with stages.measure():
        scorer.scoring.score(list(refs), out, model, options)
    return stages.total, stages
