"""Images already in memory -> batches: the rows that files of the same pixels decode to.

:func:`as_inputs` checks one array of images against the model's metadata and turns it into
graph input rows; :func:`array_batches` cuts an array, or an iterable of arrays (a generator, a
``tf.data`` numpy iterator), into :class:`~scorer.images.batches.Batch` objects that
:func:`scorer.engine.score_batch` scores exactly as it scores a batch of files.

Pixels (``uint8``, or any real dtype holding values in ``0..255``) go through the normalisation
of decoded files (:func:`scorer.images.decode.normalise`), so an array and PNG files of it give
the same numbers, bit for bit. With ``preprocessed`` the values are taken as model inputs as they
are (the usual ``x_test / 255``), in the model's input shape or as images ``[N, H, W(, C)]``.

A row holding NaN or infinity is a failed row (status ``non-finite input``), as a file that
cannot be decoded is; it is not sent to the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from scorer.contract import ModelMetadata
from scorer.errors import ScorerUsageError
from scorer.images.batches import Batch
from scorer.images.decode import normalise, output_shape
from scorer.images.listing import ImageRef
from scorer.results.schema import STATUS_OK

REASON_NON_FINITE_INPUT = "non-finite input"
LABEL_TYPES = (str, int, np.integer, np.str_)


class ArrayInputError(ScorerUsageError):
    """An array of images does not fit the model: rank, size, channels, dtype, range or labels."""


def image_shape(meta: ModelMetadata) -> tuple[int, int, int]:
    """``(H, W, C)`` of the images the model takes, whatever its input layout."""
    pre = meta.preprocessing
    return pre.height, pre.width, pre.channels


def as_inputs(images: np.ndarray, meta: ModelMetadata, preprocessed: bool = False) -> np.ndarray:
    """The graph input rows ``float32 [N, *row]`` of ``images`` (row: ``[H, W, C]`` for an
    ``NHWC`` model, ``[C, H, W]`` for ``NCHW``).

    Args:
        images: Pixels ``[N, H, W, C]`` or ``[N, H, W]`` (grayscale) at the model's input size,
            ``0..255``; with ``preprocessed``, model inputs in the model's own input shape or as
            images of that size.
        meta: The model's metadata (size, channels, layout, preprocessing).
        preprocessed: Take the values as model inputs, without the metadata's preprocessing.

    Raises:
        ArrayInputError: Naming what the model expects and what came.
    """
    array = np.asarray(images)
    if array.dtype.kind not in "uif":
        raise ArrayInputError(f"images of dtype {array.dtype} are not numbers; give pixels as uint8 "
                              "or floats (0..255), or model inputs with preprocessed=True")
    height, width, channels = image_shape(meta)
    model_row = tuple(meta.input_shape[1:])
    if preprocessed and array.ndim >= 2 and array.shape[1:] == model_row:
        return np.ascontiguousarray(array, dtype=np.float32)
    pixels = _as_hwc(array, height, width, channels, model_row if preprocessed else None)
    out = np.empty((len(pixels), *output_shape(meta.preprocessing, meta.layout)), np.float32)
    if preprocessed:
        np.copyto(np.moveaxis(out, 1, -1) if meta.layout == "NCHW" else out, pixels,
                  casting="unsafe")
        return out
    _check_range(pixels)
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float32)
    return normalise(pixels, meta.preprocessing, meta.layout, out)


def _as_hwc(array: np.ndarray, height: int, width: int, channels: int,
            model_row: tuple | None) -> np.ndarray:
    """``array`` as ``[N, H, W, C]`` images of the model's size, or an error saying why not."""
    wanted = f"[N, {height}, {width}, {channels}]" + (f" or [N, {height}, {width}]"
                                                        if channels == 1 else "")
    if model_row is not None and tuple(model_row) != (height, width, channels):
        wanted += f", or the model's input shape [N, {', '.join(map(str, model_row))}]"
    if array.ndim == 3 and channels == 1:
        array = array[..., None]
    if array.ndim != 4:
        raise ArrayInputError(f"images of shape {list(array.shape)} have rank {array.ndim}; the "
                              f"model takes {wanted}")
    if array.shape[1:3] != (height, width):
        raise ArrayInputError(f"images of {array.shape[1]}x{array.shape[2]} pixels; the model "
                              f"takes {height}x{width} ({wanted}): resize them first, or score "
                              "files, which are resized as they are decoded")
    if array.shape[3] != channels:
        hint = ("repeat the channel: np.repeat(images, 3, axis=-1)" if array.shape[3] == 1
                else "convert them to grayscale first")
        raise ArrayInputError(f"images have {array.shape[3]} channels, the model expects "
                              f"{channels} ({wanted}); {hint}")
    return array


def _check_range(pixels: np.ndarray) -> None:
    if pixels.dtype == np.uint8 or pixels.size == 0:
        return
    finite = pixels[np.isfinite(pixels)] if pixels.dtype.kind == "f" else pixels
    if finite.size and (finite.min() < 0 or finite.max() > 255):
        raise ArrayInputError(
            f"pixel values run from {finite.min():g} to {finite.max():g}, outside 0..255; the "
            "model's preprocessing (in its metadata) is applied to pixels 0..255. If these are "
            "already model inputs (such as x / 255), pass preprocessed=True")


def label_texts(labels: Sequence | np.ndarray | None, count: int,
                class_names: Sequence[str] | None) -> list[str | None]:
    """Labels as the results file stores them: class names stay, class indices become the class
    name (or the index as text when the model names no classes)."""
    if labels is None:
        return [None] * count
    values = list(np.asarray(labels).tolist()) if isinstance(labels, np.ndarray) else list(labels)
    if len(values) != count:
        raise ArrayInputError(f"{len(values)} labels for {count} images; give one label (a class "
                              "name or index) per image")
    texts: list[str | None] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, LABEL_TYPES):
            raise ArrayInputError(f"label {value!r} is neither a class name nor a class index")
        if isinstance(value, str):
            texts.append(value)
        elif class_names and 0 <= int(value) < len(class_names):
            texts.append(class_names[int(value)])
        else:
            texts.append(str(int(value)))
    return texts


def array_batches(source: np.ndarray | Iterable, meta: ModelMetadata, batch_size: int,
                  labels: Sequence | np.ndarray | None = None, preprocessed: bool = False,
                  keys: bool = False) -> Iterator[Batch]:
    """Batches of at most ``batch_size`` images from an array or an iterable of arrays.

    An item of an iterable is an array of images or an ``(images, labels)`` pair; ``labels``
    then must be ``None``. Each image is named by its index over the whole source (``"0"``,
    ``"1"``, ...); its key is the SHA-256 of its bytes as given when ``keys``, else ``""``.
    Only one batch of input rows exists at a time, however long the iterable.

    Raises:
        ArrayInputError: An array or its labels do not fit (raised at the batch that holds it).
    """
    start = 0
    for images, item_labels in _items(source, labels):
        array = np.asarray(images)
        texts = label_texts(item_labels, len(array), meta.class_names)
        for first in range(0, len(array), batch_size):
            chunk = array[first:first + batch_size]
            yield _batch(chunk, meta, preprocessed, keys, start + first,
                         texts[first:first + batch_size])
        start += len(array)


def _items(source, labels) -> Iterator[tuple[np.ndarray, Sequence | None]]:
    if isinstance(source, np.ndarray) or not isinstance(source, Iterable):
        yield np.asarray(source), labels
        return
    if labels is not None:
        raise ArrayInputError("labels= goes with an array of images; an iterable of batches "
                              "brings its labels as (images, labels) pairs")
    for item in source:
        if isinstance(item, tuple) and len(item) == 2:
            yield item[0], item[1]
        else:
            yield item, None


def _batch(chunk: np.ndarray, meta: ModelMetadata, preprocessed: bool, keys: bool, start: int,
           labels: list[str | None]) -> Batch:
    rows = as_inputs(chunk, meta, preprocessed)
    finite = np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
    refs = [ImageRef(str(start + i), Path(), labels[i]) for i in range(len(rows))]
    status = [STATUS_OK if ok else REASON_NON_FINITE_INPUT for ok in finite]
    reasons = ["" if ok else "the image holds NaN or infinite values" for ok in finite]
    digests = [hashlib.sha256(np.ascontiguousarray(image).data).hexdigest() if keys else ""
               for image in chunk]
    ok_rows = np.flatnonzero(finite).astype(np.int64)
    images = rows if finite.all() else rows[ok_rows]
    return Batch(refs=refs, keys=digests, status=status, images=images, ok_rows=ok_rows,
                 reasons=reasons)
