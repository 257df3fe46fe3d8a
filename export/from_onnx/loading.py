"""Reading an ONNX file: its weights (external data included), a check, and an opset the graph
rewrites can extend."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from export.errors import ModelLoadError, UnsupportedModelError
from scorer.contract import METADATA_KEY

ZIP, HDF5 = b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"
MIN_OPSET = 13  # the rewrites add ReduceSum, Squeeze and Unsqueeze with their axes as inputs
UPGRADE_TO = 17


def load(path: Path) -> onnx.ModelProto:
    """The model with every weight in the proto (an external ``.data`` file beside it is read)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    with path.open("rb") as file:
        start = file.read(8)
    if start.startswith((ZIP, HDF5)):
        kind = "a .keras zip" if start.startswith(ZIP) else "an HDF5 (.h5)"
        raise ModelLoadError(f"{path} is {kind} Keras model with the suffix '.onnx': rename it "
                             "to .keras or .h5 and export it as a Keras model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ModelLoadError(f"{path} is not an ONNX model: {error}") from error
    if not model.graph.node:
        raise ModelLoadError(f"{path} is not an ONNX model with a graph (no nodes)")
    external = sorted({entry.value for tensor in _tensors(model.graph)
                       if tensor.data_location == onnx.TensorProto.EXTERNAL
                       for entry in tensor.external_data if entry.key == "location"})
    missing = [name for name in external if not (path.parent / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{path} keeps its weights in {', '.join(repr(m) for m in missing)}, which is not "
            f"beside it in {str(path.parent)!r}: copy the .data file with the .onnx file (PyTorch's "
            "dynamo exporter writes both)"
        )
    if external:
        onnx.load_external_data_for_model(model, str(path.parent))
    if any(prop.key == METADATA_KEY for prop in model.metadata_props):
        raise ModelLoadError(f"{path} is already an mcd-export graph: score it with mcd-score, or "
                             "export the original model")
    return model


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _tensors(sub)


def producer(model: onnx.ModelProto) -> str:
    """Who wrote the model, e.g. ``pytorch 2.14.1``."""
    return " ".join(p for p in (model.producer_name, model.producer_version) if p) or "unknown"


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def checked(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model checked by ONNX, at opset ``MIN_OPSET`` or newer (older ones are converted to
    ``UPGRADE_TO``); the changes made."""
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise UnsupportedModelError(f"the ONNX model is not valid: {error}") from error
    version = opset(model)
    if version >= MIN_OPSET:
        return model, []
    try:
        upgraded = onnx.version_converter.convert_version(model, UPGRADE_TO)
    except Exception as error:  # noqa: BLE001 - the converter raises plain errors per op
        raise UnsupportedModelError(
            f"the model uses ONNX opset {version}, older than the {MIN_OPSET} the export needs, "
            f"and converting it to opset {UPGRADE_TO} failed ({type(error).__name__}: {error}); "
            f"export it again with opset_version={UPGRADE_TO}"
        ) from error
    return upgraded, [f"opset {version} -> {UPGRADE_TO} (onnx.version_converter)"]


__all__ = ["MIN_OPSET", "checked", "load", "opset", "producer"]
