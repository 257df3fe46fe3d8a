"""Graph rewrite: zero padding before a ``MaxPool`` becomes concatenated zeros, not a ``Pad`` node.

Keras' ``ZeroPadding2D`` followed by ``MaxPooling2D`` (ResNetV2's stem, and any model that pads
before pooling) takes the maximum over windows that include the padded zeros. tf2onnx converts it
to ``Pad -> MaxPool``, which is right, but ONNX Runtime's ``Pad_Fusion`` optimizer (1.31, on by
default) folds the ``Pad`` into the ``MaxPool``'s ``pads``, whose padding is ignored (-inf) instead of
0: every window at the border whose values are all negative changes (ResNet50V2 at 32x32: up to
0.46 relative on the pooled features), and a pad as large as the kernel makes the session fail to
load. Building the padded tensor with ``Concat`` of ``ConstantOfShape`` zeros gives the same values
and leaves nothing to fuse.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.rewrites.builder import GraphBuilder
from export.rewrites.graph import (
    Rewrite,
    consumed,
    copy_model,
    drop_unread_initializers,
    subgraphs,
    tensor_dtype,
)


def rewrite(model: onnx.ModelProto) -> Rewrite:
    """Replace every zero ``Pad`` read only by a ``MaxPool`` (subgraphs included)."""
    result = copy_model(model)
    constants = {i.name: numpy_helper.to_array(i) for i in result.graph.initializer}
    changes: list[str] = []
    _rewrite_graph(result.graph, result.graph, constants, changes)
    if changes:
        drop_unread_initializers(result.graph, constants.__contains__)  # the pads' constants
    return Rewrite(result, changes)


def _rewrite_graph(graph: onnx.GraphProto, top: onnx.GraphProto, constants: dict[str, np.ndarray],
                   changes: list[str]) -> None:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in consumed(node):
            readers.setdefault(name, []).append(node)
        for sub in subgraphs(node):
            _rewrite_graph(sub, top, constants, changes)
    nodes = []
    for node in graph.node:
        pads = _zero_pads_before_max_pool(node, readers, constants)
        if pads is None:
            nodes.append(node)
            continue
        b = GraphBuilder(top, f"{node.name or node.output[0]}/zeros")
        _concat_zeros(b, node.input[0], node.output[0], pads, tensor_dtype(top, node.input[0]))
        nodes.extend(b.nodes)
        changes.append(f"{node.name}: Pad before MaxPool -> Concat of zeros")
    del graph.node[:]
    graph.node.extend(nodes)


def _zero_pads_before_max_pool(node: onnx.NodeProto, readers: dict[str, list[onnx.NodeProto]],
                               constants: dict[str, np.ndarray]) -> list[int] | None:
    """The pads of a constant-zero ``Pad`` whose only reader is a ``MaxPool``, else None."""
    if node.op_type != "Pad" or node.domain not in ("", "ai.onnx") or len(node.input) > 3:
        return None
    users = readers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "MaxPool":
        return None
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
    pads = constants.get(node.input[1]) if len(node.input) > 1 else None
    value = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    if mode != "constant" or pads is None or value is None or np.any(value != 0) or np.any(pads < 0):
        return None
    return [int(p) for p in pads]


def _concat_zeros(b: GraphBuilder, data: str, output: str, pads: list[int], dtype: int) -> None:
    """``output`` = ``data`` with ``pads[a]`` zeros before and ``pads[rank + a]`` after axis ``a``."""
    rank = len(pads) // 2
    padded_axes = [a for a in range(rank) if pads[a] or pads[rank + a]]
    current = data
    for n, axis in enumerate(padded_axes):
        parts = [current]
        for count, at_end in ((pads[axis], False), (pads[rank + axis], True)):
            if count:
                zeros = _zeros_like_except(b, current, axis, count, rank, dtype)
                parts = [*parts, zeros] if at_end else [zeros, *parts]
        if n == len(padded_axes) - 1:
            b.op_to(output, "Concat", *parts, axis=axis)
        else:
            current = b.op("Concat", *parts, axis=axis)
    if not padded_axes:
        b.op_to(output, "Identity", data)


def _zeros_like_except(b: GraphBuilder, data: str, axis: int, count: int, rank: int,
                       dtype: int) -> str:
    """Zeros of ``dtype`` shaped like ``data`` but with ``count`` along ``axis``."""
    shape = b.op("Shape", data)
    pieces = []
    if axis > 0:
        pieces.append(b.op("Slice", shape, b.const([0], np.int64), b.const([axis], np.int64)))
    pieces.append(b.const([count], np.int64))
    if axis < rank - 1:
        pieces.append(b.op("Slice", shape, b.const([axis + 1], np.int64), b.const([rank], np.int64)))
    zero = helper.make_tensor("zero", dtype, [1], [0])
    return b.op("ConstantOfShape", b.op("Concat", *pieces, axis=0), value=zero)


__all__ = ["rewrite"]
