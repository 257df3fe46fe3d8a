"""Library entry point: a model file -> a validated, self-contained MC dropout ONNX file.

:func:`export_file` reads the source by its suffix: ``.onnx`` through :mod:`export.from_onnx`
(PyTorch and other frameworks' exports; TensorFlow is not imported), anything else as a Keras
model through :mod:`export.from_keras`. Both front ends end in :mod:`export.assemble`; the result
is written atomically.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx

from export.errors import ExportUsageError, UnsupportedModelError
from export.options import ExportOptions, ExportResult
from scorer.atomic import atomic_write

ONNX_SUFFIXES = (".onnx",)


def export_file(source: Path, destination: Path, options: ExportOptions) -> ExportResult:
    """Export the model file ``source`` (Keras ``.keras``/``.h5``, or ``.onnx``) to
    ``destination`` (written only if valid)."""
    source, destination = Path(source), Path(destination)
    check_destination(destination)
    if source.suffix.lower() in ONNX_SUFFIXES:
        from export.from_onnx import front

        model = front.load(source)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        result = front.build(model, options, source_sha256=digest, source_name=source.name)
    else:
        from export.from_keras.loading import load_model

        model = load_model(source, unsafe=options.unsafe)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        result = build(model, options, source_sha256=digest, source_name=source.name)
    save(result.model, destination)
    result.path = destination
    return result


def build(model, options: ExportOptions, source_sha256: str = "",
          source_name: str = "") -> ExportResult:
    """Build (and by default validate) the MC dropout graph of an in-memory Keras model."""
    from export.from_keras import front

    return front.build(model, options, source_sha256, source_name)


def check_destination(destination: Path) -> None:
    parent = destination.parent if str(destination.parent) else Path(".")
    if destination.is_dir():
        raise ExportUsageError(f"destination {str(destination)!r} is a directory; give a file name")
    if not parent.is_dir():
        raise ExportUsageError(f"cannot write {str(destination)!r}: folder {str(parent)!r} "
                               "does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportUsageError(f"cannot write {str(destination)!r}: folder {str(parent)!r} "
                               "is not writable")


PROTOBUF_LIMIT = 2**31 - 1  # bytes: protobuf cannot serialise a larger message


def save(model: onnx.ModelProto, destination: Path) -> None:
    """Write atomically (:func:`scorer.atomic.atomic_write`): a reader sees the old file
    or the whole new one."""
    size = serialized_size(model)
    if size > PROTOBUF_LIMIT:
        raise UnsupportedModelError(
            f"the exported graph would be {size / 2**30:.1f} GiB, above protobuf's 2 GiB limit "
            "for one self-contained ONNX file; mcd-export writes only self-contained graphs"
        )
    atomic_write(destination, model.SerializeToString())


def serialized_size(model: onnx.ModelProto) -> int:
    return model.ByteSize()


__all__ = ["ExportOptions", "ExportResult", "build", "export_file", "save"]
