"""Keras models in memory, as a notebook has them: export once, then predict on arrays.

:func:`export_model` turns a ``keras.Model`` object into the bytes of a validated mcd-export graph,
with no file in between, and remembers the last few: called again on the same unchanged model
(same architecture, same weights, same options) it returns the bytes it made before instead of
exporting again. :func:`predict` is one call from a Keras model and an array to
:class:`scorer.predictions.Predictions` (:func:`scorer.predict` on the exported graph).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from typing import Any

from export.api import ExportOptions, build
from export.errors import ExportUsageError
from export.from_keras.backend import keras

REMEMBERED = 4
"""Exports kept for models exported again (each holds one graph's bytes)."""
_exports: OrderedDict[str, bytes] = OrderedDict()
_sessions: OrderedDict[tuple, Any] = OrderedDict()  # ONNX Runtime sessions of those exports


def fingerprint(model: keras.Model, options: ExportOptions) -> str:
    """SHA-256 of what an export depends on: the model's architecture, every weight's values and
    the options. A model trained further, or rebuilt differently, has another fingerprint."""
    digest = hashlib.sha256()
    try:
        digest.update(model.to_json().encode())
    except Exception:  # noqa: BLE001 - subclassed models without a config: their class names it
        digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for weight in model.weights:
        digest.update(weight.path.encode() if hasattr(weight, "path") else b"")
        digest.update(keras.ops.convert_to_numpy(weight.value).tobytes())
    digest.update(repr(dataclasses.astuple(options)).encode())
    return digest.hexdigest()


def export_model(model: keras.Model, options: ExportOptions | None = None, **fields: Any) -> bytes:
    """The validated MC dropout graph of ``model``, as the bytes of an ``.onnx`` file.

    Args:
        model: A Keras model object (trained in this session, or loaded).
        options: Export options (``mcd-export``'s); or give their fields as keywords, e.g.
            ``export_model(model, class_names=("cat", "dog"))``.

    Raises:
        ExportUsageError: The model cannot be exported (the message says why and what to do).
        ValidationError: The graph does not reproduce the model.
    """
    if not isinstance(model, keras.Model):
        raise ExportUsageError(f"expected a keras.Model, got {type(model).__name__}; export a "
                               "model file with mcd-export MODEL.keras OUT.onnx instead")
    try:
        options = dataclasses.replace(options or ExportOptions(), **fields)
    except TypeError as error:
        known = ", ".join(f.name for f in dataclasses.fields(ExportOptions))
        raise ExportUsageError(f"{error}; the export options are: {known}") from error
    key = fingerprint(model, options)
    if key in _exports:
        _exports.move_to_end(key)
        return _exports[key]
    result = build(model, options, source_sha256=key, source_name=f"{model.name} (in memory)")
    data = result.model.SerializeToString()
    _exports[key] = data
    while len(_exports) > REMEMBERED:
        _exports.popitem(last=False)
    return data


def predict(model: keras.Model, images, passes: int = 50, seed: int = 0, *,
            export_options: ExportOptions | None = None, **options: Any):
    """Monte Carlo dropout predictions of a Keras model on arrays: :func:`export_model` (once per
    unchanged model) then :func:`scorer.predict` with ``options`` (``labels``, ``preprocessed``,
    ``batch_size``, ``device``, ``max_memory_mb``, ``save_passes``, ``keys``, ``threads``)."""
    from scorer.predicting import open_model
    from scorer.predicting import predict as predict_arrays

    data = export_model(model, export_options)
    place = (hashlib.sha256(data).hexdigest(), options.get("device", "auto"), options.get("threads"))
    if place not in _sessions:  # a loop over batches opens the graph once
        _sessions[place] = open_model(data, place[1], place[2])
        while len(_sessions) > REMEMBERED:
            _sessions.popitem(last=False)
    return predict_arrays(_sessions[place], images, passes, seed, **options)
