"""The ONNX front end: an ONNX classifier with training-mode ``Dropout`` nodes -> the converted
graph with each site's mask as an input, then :mod:`export.assemble` for the rest.

load -> check (opset) -> prepare (input, head, BatchNormalization) -> find the sites -> run the
graph once to learn the sites' mask shapes and the head's width -> convert -> keep the sampled
sites -> :func:`export.assemble.build` against ONNX Runtime on the source graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from export import preprocessing
from export.assemble import Graph, check_class_names, keep_sampled
from export.assemble import build as assemble
from export.checks.probe import probe_tensors
from export.errors import ExportUsageError, UnsupportedModelError
from export.from_onnx import convert, graph, loading, sites
from export.from_onnx.reference import OnnxReference
from export.options import ExportOptions, ExportResult, Inspection
from scorer.contract import INPUT_IMAGES, DropoutSite

PROBE_BATCHES = (2, 3)
DYNAMIC_BATCH = ("export with a dynamic batch axis, e.g. dynamic_axes={'input': {0: 'batch'}} "
                 "in torch.onnx.export")


def load(path: Path) -> onnx.ModelProto:
    """The ONNX model file (external data read from beside it)."""
    return loading.load(path)


def build(model: onnx.ModelProto, options: ExportOptions, source_sha256: str = "",
          source_name: str = "") -> ExportResult:
    """Build (and by default validate) the MC dropout graph of an ONNX model."""
    found, prepared, changes = inspect(model, options)
    masked, converted = convert.convert_masked(prepared.model, found.sites)
    built = keep_sampled(masked, found, options, changes + converted, what="Dropout node")
    reference = OnnxReference(prepared.model, built.masked, options.validation_seed)
    return assemble(found, built, reference, options, versions(), source_sha256, source_name)


def versions() -> dict[str, str]:
    """Versions of the conversion stack, recorded in the metadata."""
    return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}


def inspect(model: onnx.ModelProto, options: ExportOptions
            ) -> tuple[Inspection, graph.Prepared, list[str]]:
    """Input, head, preprocessing and dropout sites of the graph, checked against the options;
    the prepared graph and what preparing it changed."""
    if options.unsafe or options.strict:
        raise ExportUsageError(f"{'--unsafe' if options.unsafe else '--strict'} is for Keras "
                               "models; an ONNX graph has no custom code or layer internals")
    model, changes = loading.checked(model)
    prepared = graph.prepare(model, options)
    dropouts = sites.find_dropouts(prepared.model.graph)
    candidates = [d for d in dropouts if d.is_candidate]
    if not candidates:
        off = [d.name for d in dropouts]
        raise UnsupportedModelError(
            "the graph has no Dropout node in training mode with a ratio above 0"
            f"{f' (its Dropout nodes {off} are in inference mode)' if off else ''}: MC dropout "
            "would report zero uncertainty for every image. In PyTorch, export with "
            "F.dropout(x, p, training=True) in forward, or after model.eval() set the dropout "
            "modules to train() and pass training=torch.onnx.TrainingMode.PRESERVE"
        )
    selected = sites.select(candidates, options.mc_layers)
    shapes, width = probe_shapes(prepared, candidates)
    head = prepared.head
    head.width = width
    check_head(head, options.head)
    found_sites = [DropoutSite(name=d.name, kind="dropout", rate=d.rate, mask_shape=shapes[d.name],
                               layer_class="Dropout", path=d.name) for d in candidates]
    sampled = [k for k, d in enumerate(candidates) if d in selected]
    choice = preprocessing.choose(prepared.shape, options, (), prepared.layout)
    check_class_names(head, options)
    found = Inspection(prepared.shape, head, choice, found_sites, sampled, prepared.warnings,
                       "onnx", loading.producer(model))
    return found, prepared, changes + prepared.changes


def probe_shapes(prepared: graph.Prepared, candidates: list[sites.DropoutNode]
                 ) -> tuple[dict[str, tuple[int, ...]], int]:
    """Each candidate's mask shape (its input without the batch axis) and the head's width, from
    running the graph in inference on batches of 2 and 3 zero images."""
    inference = convert.in_inference(prepared.model)
    output = prepared.model.graph.output[0].name
    names = [d.data for d in candidates] + [output]
    feeds = [{INPUT_IMAGES: np.zeros((batch, *prepared.shape), np.float32)}
             for batch in PROBE_BATCHES]
    try:
        runs = probe_tensors(inference, feeds, names)
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own types
        hint = (f"; the graph was exported for a fixed batch of {prepared.fixed_batch}: "
                f"{DYNAMIC_BATCH}" if prepared.fixed_batch is not None else "")
        raise UnsupportedModelError(
            f"ONNX Runtime cannot run the graph on {PROBE_BATCHES[0]} images of shape "
            f"[{', '.join(map(str, prepared.shape))}]: {type(error).__name__}: "
            f"{str(error).strip()}{hint}"
        ) from error
    for batch, values in zip(PROBE_BATCHES, runs, strict=True):
        out = values[output]
        if out.ndim != 2 or out.shape[0] != batch:
            raise UnsupportedModelError(
                f"output {output!r} has shape {list(out.shape)} for {batch} images; mcd-export "
                f"needs [batch, classes] with the batch free: {DYNAMIC_BATCH}"
            )
        for d in candidates:
            value = values[d.data]
            if value.ndim == 0 or value.shape[0] != batch or not np.issubdtype(
                    value.dtype, np.floating):
                raise UnsupportedModelError(
                    f"Dropout node {d.name!r} reads a tensor of shape {list(value.shape)} "
                    f"({value.dtype}) for {batch} images: a site needs a float tensor with the "
                    "batch on its first axis"
                )
    last = runs[-1]
    return ({d.name: tuple(int(s) for s in last[d.data].shape[1:]) for d in candidates},
            int(last[output].shape[1]))


def check_head(head, wanted: str | None) -> None:
    """The head's width fits what was asked (or found)."""
    if head.activation == "softmax" and head.width < 2:
        raise UnsupportedModelError(
            f"output {head.name!r} has {head.width} unit; a softmax over one class is always 1: "
            "give --head sigmoid for a one-logit binary classifier"
        )
    if wanted == "sigmoid" and head.width > 1:
        raise ExportUsageError(
            f"--head sigmoid is for one logit (a binary classifier); output {head.name!r} has "
            f"{head.width}: give --head multilabel for independent labels or --head softmax"
        )
    if wanted == "multilabel" and head.width < 2:
        raise ExportUsageError(
            f"--head multilabel needs several labels; output {head.name!r} has one: give --head "
            "sigmoid"
        )


__all__ = ["Graph", "build", "check_head", "inspect", "load", "probe_shapes", "versions"]
