"""Library entry point for images in memory: arrays in, :class:`~scorer.predictions.Predictions` out.

arrays -> batches of input rows (:mod:`scorer.images.arrays`) -> the engine a scoring run uses
(:func:`scorer.engine.score_batch`: passes in chunks, metrics, rows) -> predictions in memory.
The numbers are those ``mcd-score`` writes for PNG files of the same pixels, bit for bit, whatever
the batch size. Nothing is written to disk unless the predictions are saved.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from scorer.engine import score_batch
from scorer.images.arrays import array_batches
from scorer.model.passes import memory_budget, plan
from scorer.model.session import ScoringSession, open_session
from scorer.predictions import Predictions, concatenate
from scorer.results.schema import FileHeader
from scorer.scoring import ScoreOptions, library_versions, now, session_attrs

Model = str | Path | bytes | ScoringSession


def open_model(model: Model, device: str = "auto", threads: int | None = None) -> ScoringSession:
    """An mcd-export graph opened once (a path, the file's bytes, or a session already open),
    to pass to :func:`predict` in a loop without loading it again.

    Raises:
        ModelError: Not an mcd-export ONNX graph (a Keras file: export it first).
        DeviceError: ``device`` is ``cuda`` and CUDA cannot run here.
    """
    if isinstance(model, ScoringSession):
        return model
    return open_session(model if isinstance(model, bytes) else Path(model), device, threads)


def predict(model: Model, images: np.ndarray | Iterable, passes: int = 50, seed: int = 0, *,
            labels: Sequence | np.ndarray | None = None, preprocessed: bool = False,
            batch_size: int | None = None, device: str = "auto", max_memory_mb: int = 2048,
            save_passes: bool = False, keys: bool = False,
            threads: int | None = None) -> Predictions:
    """Monte Carlo dropout predictions for images in memory.

    Args:
        model: The mcd-export ``.onnx`` file (path or bytes), or :func:`open_model`'s session.
        images: Pixels ``[N, H, W, C]`` or ``[N, H, W]`` at the model's input size, ``uint8`` or
            real numbers ``0..255``, preprocessed as files are (the metadata's scale, offset,
            mean, std); or an iterable of such arrays, or of ``(images, labels)`` pairs, scored
            one at a time (only one batch of rows in memory).
        passes: Stochastic passes ``T`` per image.
        seed: Seed of the dropout masks (``0 <= seed < 2**63``).
        labels: One class name or class index per image (an array of images only).
        preprocessed: The values are model inputs already (such as ``x / 255``): fed as they are.
        batch_size: Images per ONNX Runtime call (default: from ``max_memory_mb``).
        device: ``auto``, ``cuda`` or ``cpu``, as ``mcd-score --device``.
        max_memory_mb: Working-memory budget of one call, as ``mcd-score --max-memory``.
        save_passes: Keep every pass's outputs as ``predictions["passes"]`` ``[N, T, C]``.
        keys: Fill ``key`` with the SHA-256 of each image's bytes (else ``""``: hashing costs
            about 0.1 ms per 160x160 RGB image).
        threads: ONNX Runtime threads (default: all cores).

    Returns:
        The datasets a results file would hold, by name: ``predictions["mean"]``.

    Raises:
        ScorerUsageError: Bad options or model; :class:`~scorer.images.arrays.ArrayInputError`
            for images or labels that do not fit the model.
    """
    run = _Run(model, passes, seed, batch_size, device, max_memory_mb, save_passes, threads)
    parts = list(run.rows(images, labels, preprocessed, keys))
    has_labels = any(labelled for _, labelled in parts)
    columns = [part for part, _ in parts]
    return concatenate(run.header(has_labels, sum(len(c["path"]) for c in columns), preprocessed),
                       columns)


def iter_predict(model: Model, images: np.ndarray | Iterable, passes: int = 50, seed: int = 0, *,
                 labels: Sequence | np.ndarray | None = None, preprocessed: bool = False,
                 batch_size: int | None = None, device: str = "auto", max_memory_mb: int = 2048,
                 save_passes: bool = False, keys: bool = False,
                 threads: int | None = None) -> Iterator[Predictions]:
    """:func:`predict`, one :class:`Predictions` per batch of images: memory stays flat however
    many images an iterable brings. Images are numbered over the whole input."""
    run = _Run(model, passes, seed, batch_size, device, max_memory_mb, save_passes, threads)
    for columns, labelled in run.rows(images, labels, preprocessed, keys):
        if not labelled:
            columns.pop("label")
        yield concatenate(run.header(labelled, len(columns["path"]), preprocessed), [columns])


class _Run:
    """The session, options and plan of one prediction, and the rows of its batches."""

    def __init__(self, model: Model, passes: int, seed: int, batch_size: int | None, device: str,
                 max_memory_mb: int, save_passes: bool, threads: int | None) -> None:
        self.options = ScoreOptions(passes=passes, seed=seed, batch_size=batch_size, device=device,
                                    max_memory_mb=max_memory_mb, save_passes=save_passes,
                                    threads=threads)
        self.options.check()
        self.session = open_model(model, device, threads)
        self.plan = plan(self.session.metadata, passes,
                         memory_budget(self.session, max_memory_mb), batch_size,
                         self.session.provider)
        self.started = time.time()

    def rows(self, images, labels, preprocessed: bool, keys: bool) -> Iterator[tuple[dict, bool]]:
        """The row columns of each batch (as :func:`scorer.engine.score_batch` gives them) and
        whether its images have labels."""
        options = self.options
        for batch in array_batches(images, self.session.metadata, self.plan.batch_size, labels,
                                   preprocessed, keys):
            columns = score_batch(self.session, batch, options.passes, options.seed,
                                  options.save_passes, self.plan)
            yield columns, any(ref.label is not None for ref in batch.refs)

    def header(self, has_labels: bool, count: int, preprocessed: bool) -> FileHeader:
        """The results header of the predictions: what a scoring run records, for arrays."""
        session, options, meta = self.session, self.options, self.session.metadata
        attrs = {
            **session_attrs(session, options.device),
            "images_root": "",
            "input": "arrays, preprocessed" if preprocessed else "arrays of pixels",
            "input_count": count,
            "pass_chunk": self.plan.pass_chunk,
            "versions": library_versions(),
            "start_time": now(self.started),
        }
        return FileHeader(meta.output_kind, meta.num_outputs, options.passes, options.seed,
                          options.save_passes, has_labels, tuple(meta.class_names or ()), attrs)
