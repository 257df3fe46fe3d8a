"""Graph rewrite: turn the ``[N*T, C]`` model output into the per-pass output and its statistics.

Adds the graph outputs named in :mod:`export.metadata`: ``passes`` ``[N, T, C]``, and the sufficient
statistics ``pass_sum``, ``pass_m2`` (and for probabilities ``entropy_sum``, ``votes``) so that only
``[N, C]``-sized results need to leave ONNX Runtime when the passes are not saved. A sigmoid head
with one unit becomes two classes ``[1 - p, p]``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.builder import GraphBuilder, topological_sort
from export.metadata import (
    OUTPUT_ENTROPY_SUM,
    OUTPUT_M2,
    OUTPUT_PASSES,
    OUTPUT_SUM,
    OUTPUT_VOTES,
)

# Probabilities below this are treated as 0 in p * log(p); the product is then 0 (or < 1e-28).
LOG_FLOOR = 1e-30


def output_kind(activation: str, width: int) -> tuple[str, int]:
    """``(output_kind, C)`` for a head: probabilities for softmax and one-unit sigmoid heads."""
    if activation == "softmax" and width >= 2:
        return "probabilities", width
    if activation == "sigmoid" and width == 1:
        return "probabilities", 2
    return "values", width


def add_outputs(
    model: onnx.ModelProto, output: str, passes_1d: str, activation: str, width: int
) -> str:
    """Add the outputs in place; return the output kind."""
    graph = model.graph
    kind, classes = output_kind(activation, width)
    b = GraphBuilder(graph, "mcd_out")
    rows = output
    if activation == "sigmoid" and width == 1:
        rows = b.op("Concat", b.op("Sub", b.const([[1.0]], np.float32), output), output, axis=1)
    shape = b.op("Concat", b.const([-1], np.int64), passes_1d, b.const([classes], np.int64),
                 axis=0)
    passes = b.op_to(OUTPUT_PASSES, "Reshape", rows, shape)
    total = b.op_to(OUTPUT_SUM, "ReduceSum", passes, b.const([1], np.int64), keepdims=0)
    count = b.op("Cast", passes_1d, to=TensorProto.FLOAT)
    mean = b.op("Unsqueeze", b.op("Div", total, count), b.const([1], np.int64))
    deviation = b.op("Sub", passes, mean)
    b.op_to(OUTPUT_M2, "ReduceSum", b.op("Mul", deviation, deviation), b.const([1], np.int64),
            keepdims=0)
    outputs = [(OUTPUT_PASSES, ["N", "T", classes]), (OUTPUT_SUM, ["N", classes]),
               (OUTPUT_M2, ["N", classes])]
    if kind == "probabilities":
        floored = b.op("Max", passes, b.const(LOG_FLOOR, np.float32))
        plogp = b.op("ReduceSum", b.op("Mul", passes, b.op("Log", floored)),
                     b.const([2], np.int64), keepdims=0)
        b.op_to(OUTPUT_ENTROPY_SUM, "Neg",
                b.op("ReduceSum", plogp, b.const([1], np.int64), keepdims=0))
        winner = b.op("ArgMax", passes, axis=2, keepdims=1)
        classes_range = b.const(np.arange(classes), np.int64)
        onehot = b.op("Cast", b.op("Equal", winner, classes_range), to=TensorProto.FLOAT)
        b.op_to(OUTPUT_VOTES, "ReduceSum", onehot, b.const([1], np.int64), keepdims=0)
        outputs += [(OUTPUT_ENTROPY_SUM, ["N"]), (OUTPUT_VOTES, ["N", classes])]
    b.flush()
    for name, dims in outputs:
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    topological_sort(graph)
    return kind
