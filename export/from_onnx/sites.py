"""Which ONNX nodes are Monte Carlo sites, and what cannot be one.

A site is a ``Dropout`` node whose ``training_mode`` is a constant true (what PyTorch's exporters
write for ``F.dropout(x, p, training=True)`` and for an ``nn.Dropout`` left in ``train()``), with a
constant ``ratio`` above 0. ``Dropout`` nodes in inference mode (``training_mode`` false or absent) are
identity and stay so. The export is refused, naming the node, where the graph draws random numbers
some other way (``RandomUniformLike`` and a comparison: dropout written by hand), where
``training_mode`` or ``ratio`` is computed at run time, where a site's mask output is read, and
where a training-mode ``Dropout`` sits inside a control-flow subgraph.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from export.errors import ExportUsageError, UnsupportedModelError
from export.rewrites.graph import subgraphs, walk

RANDOM_OPS = ("RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike",
              "Bernoulli", "Multinomial")
DEFAULT_RATIO = 0.5  # ONNX Dropout's default


@dataclass(frozen=True)
class DropoutNode:
    """A top-level ``Dropout`` node: its name, the tensor it reads and writes, ratio and mode."""

    name: str
    data: str
    output: str
    rate: float
    training: bool

    @property
    def is_candidate(self) -> bool:
        """Whether it samples in the source graph: a site unless ``--mc-layers`` leaves it out."""
        return self.training and self.rate > 0

    def describe(self) -> str:
        return f"{self.name} (Dropout {self.rate:g})"


def node_name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the graph's initializers and ``Constant`` nodes (through ``Identity``/``Cast``)."""
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type in ("Identity", "Cast") and node.input and node.input[0] in values:
            value = values[node.input[0]]
            if node.op_type == "Cast":
                to = next(a.i for a in node.attribute if a.name == "to")
                value = value.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
            values[node.output[0]] = value
    return values


def find_dropouts(graph: onnx.GraphProto) -> list[DropoutNode]:
    """Every top-level ``Dropout`` node in graph order, after refusing what cannot be a site."""
    refuse_random_ops(graph)
    values = constants(graph)
    inputs = {i.name for i in graph.input}
    read = {name for _, node in walk(graph) for name in node.input} | {o.name for o in graph.output}
    found = []
    for node in graph.node:
        for sub in subgraphs(node):
            _refuse_nested(sub, node)
        if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
            continue
        name = node_name(node)
        rate = _constant(node, 1, values, inputs, "ratio", DEFAULT_RATIO)
        training = bool(_constant(node, 2, values, inputs, "training_mode", False))
        if training and len(node.output) > 1 and node.output[1] and node.output[1] in read:
            raise UnsupportedModelError(
                f"Dropout node {name!r}: the graph reads its mask output {node.output[1]!r}, "
                "which the exported graph cannot give; mcd-export supports dropout whose mask "
                "is only applied"
            )
        found.append(DropoutNode(name, node.input[0], node.output[0], float(rate), training))
    return found


def _constant(node: onnx.NodeProto, position: int, values: dict[str, np.ndarray],
              inputs: set[str], what: str, default):
    if len(node.input) <= position or not node.input[position]:
        return default
    name = node.input[position]
    if name in values and np.size(values[name]) == 1:
        return np.asarray(values[name]).reshape(()).item()
    source = f"graph input {name!r}" if name in inputs else f"tensor {name!r}, computed in the graph"
    raise UnsupportedModelError(
        f"Dropout node {node_name(node)!r}: its {what} comes from {source}; mcd-export needs a "
        f"constant {what} (export with the dropout's mode and rate fixed: PyTorch does, for "
        "F.dropout(x, p, training=True) and for nn.Dropout in train())"
    )


def refuse_random_ops(graph: onnx.GraphProto) -> None:
    """Refuse random ops anywhere in the graph, naming the pattern they start."""
    for scope, node in walk(graph):
        if node.op_type in RANDOM_OPS:
            pattern = " -> ".join(_chain(scope, node))
            raise UnsupportedModelError(
                f"node {node_name(node)!r} draws random numbers in the graph ({pattern}): dropout "
                "written by hand as random ops and a comparison, e.g. x * (torch.rand_like(x) > p), "
                "cannot be made reproducible. Use nn.Dropout or F.dropout(x, p, training=True), "
                "which export as Dropout nodes, and export again"
            )


def _chain(graph: onnx.GraphProto, start: onnx.NodeProto, length: int = 4) -> list[str]:
    """``start`` and the ops after it along its first reader, e.g. RandomUniformLike -> Greater."""
    chain, node = [start.op_type], start
    for _ in range(length - 1):
        readers = [n for n in graph.node if node.output and node.output[0] in n.input]
        if not readers:
            break
        node = readers[0]
        chain.append(node.op_type)
    return chain


def _refuse_nested(sub: onnx.GraphProto, holder: onnx.NodeProto) -> None:
    values = constants(sub)
    for _, node in walk(sub):
        if node.op_type != "Dropout" or len(node.input) < 3 or not node.input[2]:
            continue
        mode = values.get(node.input[2])
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            raise UnsupportedModelError(
                f"Dropout node {node_name(node)!r} in training mode lies inside the "
                f"{holder.op_type} node {node_name(holder)!r}: mcd-export samples dropout only in "
                "the main graph; export the model without control flow around its dropout "
                "(torch.jit.trace rather than script)"
            )


def select(candidates: Sequence[DropoutNode], patterns: Sequence[str] | None
           ) -> list[DropoutNode]:
    """The candidates whose node name matches one of the ``--mc-layers`` globs (all for None)."""
    if patterns is None:
        return list(candidates)
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(c.name, p) for c in candidates)]
    if unmatched:
        listing = "; ".join(c.describe() for c in candidates) or "none"
        raise ExportUsageError(
            f"--mc-layers pattern{'s' if len(unmatched) > 1 else ''} "
            f"{', '.join(repr(p) for p in unmatched)} match{'' if len(unmatched) > 1 else 'es'} "
            f"no Dropout node in training mode with a ratio above 0. The graph's are: {listing}. "
            "Give node names, or globs such as '*classifier*'"
        )
    return [c for c in candidates if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


__all__ = ["RANDOM_OPS", "DropoutNode", "constants", "find_dropouts", "refuse_random_ops",
           "select"]
