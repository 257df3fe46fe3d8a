"""Graph rewrite: turn the ``[N*T, C]`` model output into the per-pass output and its statistics.

Adds the graph outputs named in :mod:`scorer.contract`: ``passes`` ``[N, T, C]``, and the sufficient
statistics ``pass_sum``, ``pass_m2`` (and for probabilities ``entropy_sum``, ``votes``) so that only
``[N, C]``-sized results need to leave ONNX Runtime when the passes are not saved. A sigmoid head
with one unit becomes two classes ``[1 - p, p]``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.builder import GraphBuilder, topological_sort
from scorer.contract import (
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
    total = _sum_over_passes(b, passes, passes_1d, OUTPUT_SUM)
    count = b.op("Cast", passes_1d, to=TensorProto.FLOAT)
    mean = b.op("Unsqueeze", b.op("Div", total, count), b.const([1], np.int64))
    deviation = b.op("Sub", passes, mean)
    _sum_over_passes(b, b.op("Mul", deviation, deviation), passes_1d, OUTPUT_M2)
    outputs = [(OUTPUT_PASSES, ["N", "T", classes]), (OUTPUT_SUM, ["N", classes]),
               (OUTPUT_M2, ["N", classes])]
    if kind == "probabilities":
        floored = b.op("Max", passes, b.const(LOG_FLOOR, np.float32))
        plogp = b.op("Reshape", b.op("Mul", passes, b.op("Log", floored)),
                     b.const([0, -1, 1], np.int64))
        values_1d = b.op("Mul", passes_1d, b.const([classes], np.int64))
        total_plogp = b.op("Reshape", _sum_rows(b, plogp, values_1d), b.const([-1], np.int64))
        b.op_to(OUTPUT_ENTROPY_SUM, "Neg", total_plogp)
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


def _sum_over_passes(b: GraphBuilder, values: str, passes_1d: str, output: str) -> str:
    """Sum ``[N, T, C]`` over T into ``output`` ``[N, C]``, with the same result whatever N."""
    return b.op_to(output, "Squeeze", _sum_rows(b, values, passes_1d), b.const([1], np.int64))


def _sum_rows(b: GraphBuilder, values: str, rows_1d: str) -> str:
    """``ones[1, R] @ values[N, R, C]`` -> ``[N, 1, C]``: sums over R, the same whatever N.

    ONNX Runtime's CPU ReduceSum and row-vector MatMuls sum in an order that depends on N (and on
    each row's alignment in memory), so an image's sums would differ in their last bits between
    batch sizes. A broadcast ``[1, R]`` left operand makes one identical product per image.
    """
    ones_shape = b.op("Concat", b.const([1], np.int64), rows_1d, axis=0)
    ones = b.op("ConstantOfShape", ones_shape,
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    return b.op("MatMul", ones, values)
