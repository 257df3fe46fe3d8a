"""How much of a converted graph's work depends on given tensors: the T-times share of a site.

Work is counted per node for one image: multiply-adds for ``Conv``, ``MatMul``, ``Gemm`` and
``Einsum``; one operation per output element for every other node. Shapes come from ONNX shape
inference with the batch fixed to 1; a node whose output shape is unknown counts as 0 (and
:attr:`GraphCost.unknown` counts such nodes). The estimate tells the trunk (run once per image) from
the stochastic part (run once per image and pass); it is not a timing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from export.rewrites.graph import copy_model, dependents
from scorer.contract import INPUT_IMAGES


@dataclass(frozen=True)
class GraphCost:
    """Per-node work of a graph's top-level nodes, for one image."""

    graph: onnx.GraphProto
    costs: list[float]
    unknown: int

    @property
    def total(self) -> float:
        return sum(self.costs)

    def share_after(self, sources: set[str]) -> float:
        """The share of the work that depends on ``sources`` (runs T times if they are masks)."""
        if not self.total:
            return 0.0
        _, nodes = dependents(self.graph, sources)
        return sum(self.costs[i] for i in nodes) / self.total


def graph_cost(model: onnx.ModelProto) -> GraphCost:
    """The :class:`GraphCost` of ``model`` (see module docstring)."""
    single = copy_model(model)
    for info in single.graph.input:
        if info.name == INPUT_IMAGES and info.type.tensor_type.shape.dim:
            info.type.tensor_type.shape.dim[0].dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(single, data_prop=True)
    except Exception:  # noqa: BLE001  shape inference fails on some graphs: count nothing
        inferred = single
    shapes = _shapes(inferred)
    costs = [_node_cost(node, shapes) for node in model.graph.node]
    return GraphCost(model.graph, [c or 0.0 for c in costs], sum(c is None for c in costs))


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    graph = model.graph
    shapes: dict[str, list[int | None]] = {
        init.name: list(init.dims) for init in graph.initializer
    }
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None
                                 for d in tensor_type.shape.dim]
    return shapes


def _size(shape: list[int | None] | None) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return math.prod(shape)


def _node_cost(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> float | None:
    """Work of one node for one image, or None if its output shape is unknown."""
    out = _size(shapes.get(node.output[0])) if node.output else None
    if out is None:
        return None
    inputs = [shapes.get(name) for name in node.input]
    if node.op_type in ("Conv", "ConvTranspose") and len(inputs) > 1:
        # Conv: each output element sums C/group * kh * kw products (weight [M, C/group, kh, kw]);
        # ConvTranspose: each input element feeds M/group * kh * kw outputs (weight [C, M/group, ...]).
        per_element = _size(inputs[1][1:]) if inputs[1] else None
        elements = out if node.op_type == "Conv" else _size(inputs[0])
        return float((elements or out) * (per_element or 1))
    if node.op_type in ("MatMul", "Gemm") and inputs and inputs[0] and inputs[0][-1]:
        transposed = node.op_type == "Gemm" and any(
            a.name == "transA" and a.i for a in node.attribute)
        depth = inputs[0][0] if transposed else inputs[0][-1]
        return float(out * (depth or 1))
    if node.op_type == "Einsum":
        return float(out * _einsum_depth(node, inputs))
    return float(out)


def _einsum_depth(node: onnx.NodeProto, inputs: list[list[int | None] | None]) -> int:
    """Product of the sizes of the indices summed over (absent from the output)."""
    equation = next(a.s.decode() for a in node.attribute if a.name == "equation")
    left, _, right = equation.replace(" ", "").partition("->")
    sizes: dict[str, int] = {}
    for term, shape in zip(left.split(","), inputs, strict=False):
        if shape is None or "..." in term:
            continue
        for letter, dim in zip(term, shape, strict=False):
            if dim:
                sizes[letter] = dim
    return math.prod(sizes.get(letter, 1) for letter in set(left) - set(right) - {",", "."})


__all__ = ["GraphCost", "graph_cost"]
