"""Graph rewrite: turn the ``[N*T, C]`` model output into the per-pass output and its statistics.

Adds the graph outputs named in :mod:`scorer.contract`: ``passes`` ``[N, T, C]``, and the sufficient
statistics ``pass_sum``, ``pass_m2``, for probabilities ``entropy_sum`` and ``votes``, for multi-label
heads ``label_entropy_sum``, so that only ``[N, C]``-sized results need to leave ONNX Runtime when the
passes are not saved. A sigmoid head with one unit becomes two classes ``[1 - p, p]``; a sigmoid head
with several units is multi-label: C independent probabilities.

A dense output (``spatial`` ``(H, W)``: ``[N*T, H, W, C]``, channels last) gets the same outputs
per pixel: ``passes`` ``[N, T, H, W, C]``, ``pass_sum`` ``[N, H, W, C]``, ``entropy_sum``
``[N, H, W]``; each pixel's sums are those of a classifier with that pixel's C outputs.

Every sum over passes (or over passes and classes) is a MatMul with a ones row, never a ReduceSum,
so an image's sums are bit-identical whatever the batch size (see :func:`_sum_rows`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.rewrites.builder import GraphBuilder, topological_sort
from export.rewrites.graph import Rewrite, copy_model
from export.rewrites.names import PASSES_1D
from scorer.contract import (
    OUTPUT_ENTROPY_SUM,
    OUTPUT_LABEL_ENTROPY_SUM,
    OUTPUT_M2,
    OUTPUT_PASSES,
    OUTPUT_SUM,
    OUTPUT_VOTES,
    STATISTICS,
)

# Probabilities below this are treated as 0 in p * log(p); the product is then 0 (or < 1e-28).
LOG_FLOOR = 1e-30


def output_kind(activation: str, width: int) -> tuple[str, int]:
    """``(output_kind, C)`` for a head: probabilities for softmax and one-unit sigmoid heads,
    multilabel for sigmoid heads with several units, values otherwise."""
    if activation == "softmax" and width >= 2:
        return "probabilities", width
    if activation == "sigmoid":
        return ("probabilities", 2) if width == 1 else ("multilabel", width)
    return "values", width


def add_outputs(model: onnx.ModelProto, activation: str, width: int,
                spatial: tuple[int, ...] = ()) -> Rewrite:
    """Replace the ``[N*T, C]`` output of :func:`export.rewrites.stochastic.make_stochastic`'s graph by the
    contract's outputs (see module docstring); ``[N*T, *spatial, C]`` for dense outputs."""
    result = copy_model(model)
    graph = result.graph
    (output,) = [o.name for o in graph.output]
    kind, classes = output_kind(activation, width)
    b = GraphBuilder(graph, "mcd_out")
    rows = output
    if activation == "sigmoid" and width == 1:
        rows = b.op("Concat", b.op("Sub", b.const([[1.0]], np.float32), output), output,
                    axis=len(spatial) + 1)
    shape = b.op("Concat", b.const([-1], np.int64), PASSES_1D,
                 b.const([*spatial, classes], np.int64), axis=0)
    passes = b.op_to(OUTPUT_PASSES, "Reshape", rows, shape)
    item = [*spatial, classes]  # one image's output
    total = _sum_over_passes(b, passes, OUTPUT_SUM, item)
    count = b.op("Cast", PASSES_1D, to=TensorProto.FLOAT)
    mean = b.op("Unsqueeze", b.op("Div", total, count), b.const([1], np.int64))
    deviation = b.op("Sub", passes, mean)
    _sum_over_passes(b, b.op("Mul", deviation, deviation), OUTPUT_M2, item)
    dims = ["N", *spatial, classes]
    outputs = [(OUTPUT_PASSES, ["N", "T", *spatial, classes]), (OUTPUT_SUM, dims),
               (OUTPUT_M2, dims)]
    if kind == "probabilities":
        outputs += (_probability_outputs(b, passes, classes) if not spatial
                    else _dense_probability_outputs(b, passes, classes, spatial))
    elif kind == "multilabel":
        _sum_over_passes(b, b.op("Neg", _bernoulli_plogp(b, passes)), OUTPUT_LABEL_ENTROPY_SUM,
                         item)
        outputs.append((OUTPUT_LABEL_ENTROPY_SUM, dims))
    if [name for name, _ in outputs[1:]] != list(STATISTICS[kind]):  # the contract's statistics
        raise ValueError(f"{kind} outputs {[n for n, _ in outputs[1:]]} differ from the "
                         f"contract's {list(STATISTICS[kind])}")
    b.flush()
    del graph.output[:]
    for name, dims in outputs:
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    topological_sort(graph)
    where = f" per pixel ({'x'.join(map(str, spatial))})" if spatial else ""
    return Rewrite(result, [f"{kind} outputs{where}: {', '.join(name for name, _ in outputs)}"])


def _dense_probability_outputs(b: GraphBuilder, passes: str, classes: int,
                               spatial: tuple[int, ...]) -> list[tuple[str, list]]:
    """Per pixel: ``entropy_sum`` ``[N, H, W]`` and ``votes`` ``[N, H, W, C]``."""
    pixels = int(np.prod(spatial))
    plogp = b.op("Reshape", _plogp(b, passes), b.const([0, 0, pixels, classes], np.int64))
    per_pass = b.op("MatMul", plogp, b.const(np.ones((classes, 1)), np.float32))  # [N, T, P, 1]
    per_pass = b.op("Reshape", per_pass, b.const([0, 0, pixels], np.int64))
    total = _sum_rows(b, per_pass, PASSES_1D)  # [N, 1, P]
    b.op_to(OUTPUT_ENTROPY_SUM, "Neg", b.op("Reshape", total, b.const([-1, *spatial], np.int64)))
    winner = b.op("ArgMax", passes, axis=-1, keepdims=1)
    onehot = b.op("Cast", b.op("Equal", winner, b.const(np.arange(classes), np.int64)),
                  to=TensorProto.FLOAT)
    b.op_to(OUTPUT_VOTES, "ReduceSum", onehot, b.const([1], np.int64), keepdims=0)
    return [(OUTPUT_ENTROPY_SUM, ["N", *spatial]), (OUTPUT_VOTES, ["N", *spatial, classes])]


def _probability_outputs(b: GraphBuilder, passes: str, classes: int) -> list[tuple[str, list]]:
    """``entropy_sum`` ``[N]`` (sum over passes of each pass's entropy) and ``votes`` ``[N, C]``."""
    plogp = b.op("Reshape", _plogp(b, passes), b.const([0, -1, 1], np.int64))
    values_1d = b.op("Mul", PASSES_1D, b.const([classes], np.int64))
    total_plogp = b.op("Reshape", _sum_rows(b, plogp, values_1d), b.const([-1], np.int64))
    b.op_to(OUTPUT_ENTROPY_SUM, "Neg", total_plogp)
    winner = b.op("ArgMax", passes, axis=2, keepdims=1)
    classes_range = b.const(np.arange(classes), np.int64)
    onehot = b.op("Cast", b.op("Equal", winner, classes_range), to=TensorProto.FLOAT)
    b.op_to(OUTPUT_VOTES, "ReduceSum", onehot, b.const([1], np.int64), keepdims=0)
    return [(OUTPUT_ENTROPY_SUM, ["N"]), (OUTPUT_VOTES, ["N", classes])]


def _plogp(b: GraphBuilder, p: str) -> str:
    """``p * log(p)`` with ``0 log 0 = 0`` (p floored at :data:`LOG_FLOOR` inside the log)."""
    return b.op("Mul", p, b.op("Log", b.op("Max", p, b.const(LOG_FLOOR, np.float32))))


def _bernoulli_plogp(b: GraphBuilder, p: str) -> str:
    """``p log p + (1 - p) log(1 - p)`` elementwise: minus each label's Bernoulli entropy."""
    complement = b.op("Sub", b.const(1.0, np.float32), p)
    return b.op("Add", _plogp(b, p), _plogp(b, complement))


def _sum_over_passes(b: GraphBuilder, values: str, output: str, item: list[int]) -> str:
    """Sum ``[N, T, *item]`` over T into ``output`` ``[N, *item]``, the same whatever N."""
    if len(item) == 1:
        return b.op_to(output, "Squeeze", _sum_rows(b, values, PASSES_1D),
                       b.const([1], np.int64))
    flat = b.op("Reshape", values, b.const([0, 0, int(np.prod(item))], np.int64))
    return b.op_to(output, "Reshape", _sum_rows(b, flat, PASSES_1D),
                   b.const([-1, *item], np.int64))


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


__all__ = ["LOG_FLOOR", "add_outputs", "output_kind"]
