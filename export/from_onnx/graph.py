"""Preparing an ONNX classifier for the rewrites: one image input named ``images`` with a batch
axis, one output after the head's activation, BatchNormalization in inference.

- The input: the graph's single non-weight input, float, ``[N, C, H, W]`` (PyTorch), ``[N, H, W, C]``
  or a flat ``[N, D]``; the layout comes from where the 1 or 3 channels are (or ``--layout``), a
  dynamic height and width from ``--input-size``. It is renamed ``images`` through an ``Identity``.
- The head: an output that ends in ``Softmax`` or ``Sigmoid`` is read as such (``LogSoftmax`` gets an
  ``Exp``); one that ends in anything else holds logits or values, and ``--head`` says what to append
  (``softmax``, ``sigmoid``, ``multilabel``: a ``Sigmoid`` over several labels) or that it is read
  as values (``linear``). Without it the export stops naming the last op and the choices.
- ``BatchNormalization`` in training mode (a model exported after ``model.train()``) normalises by
  the batch's statistics: every image's score would depend on the others in its batch. Such nodes
  are rewritten to inference with the running statistics the graph carries, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper

from export.errors import ExportUsageError, UnsupportedModelError
from export.options import ExportOptions, Head
from export.rewrites.graph import copy_model
from scorer.contract import INPUT_IMAGES

ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}
PASS_THROUGH = ("Identity",)
FLOAT_TYPES = (onnx.TensorProto.FLOAT,)


@dataclass
class Prepared:
    """The prepared graph and what preparing it found."""

    model: onnx.ModelProto
    shape: tuple[int, ...]  # one image, without the batch axis
    layout: str | None  # NCHW or NHWC for a 4-d input, None for a flat one
    head: Head
    fixed_batch: int | None = None  # the batch size the source input was exported with, if fixed
    warnings: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def prepare(model: onnx.ModelProto, options: ExportOptions) -> Prepared:
    """See the module docstring; ``model`` is not modified."""
    result = copy_model(model)
    graph = result.graph
    del graph.value_info[:]  # shapes recorded at export time (a fixed batch of 1, say)
    source, shape, layout = image_input(graph, options)
    batch = source.type.tensor_type.shape.dim[0]
    fixed = batch.dim_value if batch.HasField("dim_value") else None
    changes = rename_input(graph, source, shape)
    head, head_changes = choose_head(graph, options)
    warnings, bn_changes = batchnorm_in_inference(graph)
    constants_to_initializers(graph)
    return Prepared(result, shape, layout, head, fixed, warnings,
                    changes + head_changes + bn_changes)


def image_input(graph: onnx.GraphProto, options: ExportOptions
                ) -> tuple[onnx.ValueInfoProto, tuple[int, ...], str | None]:
    """The image input, its shape without the batch axis and its layout."""
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise UnsupportedModelError(
            f"the graph has {len(inputs)} inputs ({names}); mcd-export needs a model with one "
            "image input: export the image branch alone"
        )
    (source,) = inputs
    tensor = source.type.tensor_type
    if tensor.elem_type not in FLOAT_TYPES:
        raise UnsupportedModelError(
            f"input {source.name!r} is {onnx.TensorProto.DataType.Name(tensor.elem_type)}; "
            "mcd-score feeds float32 images: export the model with a float32 input"
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) not in (2, 3, 4):
        raise UnsupportedModelError(
            f"input {source.name!r} has shape {_shape_text(dims)}; expected images "
            "[batch, channels, height, width] or [batch, height, width, channels], or a flat "
            "[batch, values]"
        )
    body = dims[1:]
    layout = None
    if len(dims) == 4:
        layout = options.layout or _layout(body, source.name)
        spatial = (1, 2) if layout == "NCHW" else (0, 1)
        channel = 0 if layout == "NCHW" else 2
        if body[channel] not in (1, 3):
            raise UnsupportedModelError(
                f"input {source.name!r} has shape {_shape_text(dims)}: in layout {layout} that is "
                f"{body[channel]} channels; mcd-score feeds grayscale (1) or RGB (3)"
            )
        if options.input_size is not None:
            fixed = [body[a] for a in spatial]
            if all(d is not None for d in fixed) and tuple(fixed) != tuple(options.input_size):
                raise ExportUsageError(
                    f"--input-size {options.input_size[0]}x{options.input_size[1]} does not "
                    f"match the graph's fixed input size {fixed[0]}x{fixed[1]}"
                )
            for axis, size in zip(spatial, options.input_size, strict=True):
                body[axis] = size
    elif options.layout is not None:
        raise ExportUsageError(f"--layout is for 4-d image inputs; input {source.name!r} has "
                               f"shape {_shape_text(dims)}")
    if any(d is None for d in body):
        raise UnsupportedModelError(
            f"input {source.name!r} has shape {_shape_text(dims)} with unknown dimensions; give "
            "the image size with --input-size HEIGHTxWIDTH"
        )
    return source, tuple(int(d) for d in body), layout


def _layout(body: list[int | None], name: str) -> str:
    first, last = body[0] in (1, 3), body[-1] in (1, 3)
    if first != last:
        return "NCHW" if first else "NHWC"
    raise ExportUsageError(
        f"cannot tell from input {name!r} of shape [batch, {', '.join(map(_dim, body))}] where its "
        "channels are: give --layout NCHW (PyTorch) or --layout NHWC"
    )


def _dim(d: int | None) -> str:
    return "?" if d is None else str(d)


def _shape_text(dims: list[int | None]) -> str:
    return "[" + ", ".join(_dim(d) for d in dims) + "]"


def rename_input(graph: onnx.GraphProto, source: onnx.ValueInfoProto,
                 shape: tuple[int, ...]) -> list[str]:
    """Make the input ``images`` ``[N, *shape]``, read by the graph through an ``Identity``."""
    images = helper.make_tensor_value_info(INPUT_IMAGES, onnx.TensorProto.FLOAT, ["N", *shape])
    changes = []
    if source.name != INPUT_IMAGES:
        graph.node.insert(0, helper.make_node("Identity", [INPUT_IMAGES], [source.name],
                                              name="mcd_in/images"))
        changes.append(f"input {source.name!r} -> {INPUT_IMAGES!r} [N, {', '.join(map(str, shape))}]")
    position = list(graph.input).index(source)
    graph.input.remove(source)
    graph.input.insert(position, images)
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    return changes


def choose_head(graph: onnx.GraphProto, options: ExportOptions) -> tuple[Head, list[str]]:
    """Keep the chosen output and read or append its activation (see the module docstring).

    The head's width is filled in by the caller once the graph has run (``Head.width`` is 0 here).
    """
    names = [o.name for o in graph.output]
    if options.output is None:
        if len(names) != 1:
            raise UnsupportedModelError(
                f"the graph has {len(names)} outputs ({', '.join(names)}); choose one with "
                "--output NAME"
            )
        index = 0
    elif options.output in names:
        index = names.index(options.output)
    else:
        raise UnsupportedModelError(
            f"the graph has no output {options.output!r}; its outputs are: {', '.join(names)}"
        )
    kept = graph.output[index]
    del graph.output[:]
    graph.output.append(kept)
    last = _producer(graph, kept.name)
    op = last.op_type if last is not None else "graph input"
    found = ACTIVATIONS.get(op) or ("log_softmax" if op == "LogSoftmax" else None)
    wanted = options.head
    if wanted == "linear":
        return Head(index, kept.name, "linear", 0), []
    if found == "softmax" and wanted in (None, "softmax"):
        return Head(index, kept.name, "softmax", 0), []
    if found == "sigmoid" and wanted in (None, "sigmoid", "multilabel"):
        return Head(index, kept.name, "sigmoid", 0), []
    if found == "log_softmax" and wanted in (None, "softmax"):
        return Head(index, kept.name, "softmax", 0), _append(graph, "Exp", "softmax")
    if found is not None:
        raise ExportUsageError(
            f"output {kept.name!r} already ends in {op}; --head {wanted} contradicts it (give "
            "--head linear to read its values as they are)"
        )
    if wanted is None:
        raise UnsupportedModelError(
            f"output {kept.name!r} ends in {op}, not in Softmax or Sigmoid: say how to read it "
            "with --head softmax (logits of one-of-C classes), --head sigmoid (one logit of a "
            "binary classifier), --head multilabel (independent logits) or --head linear "
            "(values, read as they are)"
        )
    if wanted == "softmax":
        return Head(index, kept.name, "softmax", 0), _append(graph, "Softmax", "softmax", axis=-1)
    return Head(index, kept.name, "sigmoid", 0), _append(graph, "Sigmoid", wanted)


def _producer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producers.get(node.input[0])
    return node


def _append(graph: onnx.GraphProto, op_type: str, head: str, **attrs) -> list[str]:
    """Append ``op_type`` after the single output; the output keeps its name's place."""
    output = graph.output[0]
    logits = f"{output.name}/mcd_logits"
    for node in graph.node:
        node.output[:] = [logits if o == output.name else o for o in node.output]
        node.input[:] = [logits if i == output.name else i for i in node.input]
    graph.node.append(helper.make_node(op_type, [logits], [output.name], name=f"mcd_head/{op_type}",
                                       **attrs))
    return [f"head: {op_type} appended after output {output.name!r} (--head {head})"]


def constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Top-level ``Constant`` nodes holding a tensor become initializers (as ONNX Runtime does
    when it loads a graph), so a rewrite that stops reading one can drop it."""
    for node in list(graph.node):
        if node.op_type == "Constant" and len(node.attribute) == 1 and \
                node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            graph.node.remove(node)


def batchnorm_in_inference(graph: onnx.GraphProto) -> tuple[list[str], list[str]]:
    """Set every training-mode ``BatchNormalization`` to inference (see the module docstring)."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    changed = []
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            continue
        mode = next((a for a in node.attribute if a.name == "training_mode"), None)
        if mode is None or mode.i == 0:
            continue
        used = [name for name in node.output[1:] if name and name in read]
        if used:
            raise UnsupportedModelError(
                f"BatchNormalization {node.name!r} runs in training mode and its running "
                f"statistics ({', '.join(used)}) are read by the graph: export the model after "
                "model.eval(), with only the dropout modules in train()"
            )
        mode.i = 0
        del node.output[1:]
        changed.append(node.name or node.output[0])
    if not changed:
        return [], []
    warning = (f"{len(changed)} BatchNormalization node{'s' if len(changed) > 1 else ''} "
               f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}) were exported in "
               "training mode (model.train()), where each image's output depends on its batch: "
               "rewritten to inference with the running statistics in the graph. To silence this, "
               "export after model.eval() with only the dropout modules in train()")
    return [warning], [f"{name}: BatchNormalization training -> inference" for name in changed]


__all__ = ["Prepared", "batchnorm_in_inference", "choose_head", "constants_to_initializers", "image_input",
           "prepare", "rename_input"]
