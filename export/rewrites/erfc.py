"""Graph rewrite: ``Erfc(x)`` -> ``1 - Erf(x)``.

TensorFlow's exact gelu (``keras.activations.gelu(approximate=False)``, ConvNeXt, ViT blocks) is
``0.5 * x * erfc(-x / sqrt(2))``. tf2onnx has no conversion for ``Erfc`` and leaves the node as it
is; ONNX has ``Erf`` (with a CUDA kernel). ``1 - Erf(x)`` is within 2e-7 of ``erfc(x)`` in absolute
terms (tested on [-6, 6]); where ``erfc(x)`` is tiny (x > 4) it loses its relative precision, which
gelu's factor ``0.5 * x`` turns into an error below ``1e-7 * |x|``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.rewrites.graph import Rewrite, copy_model, subgraphs, tensor_dtype

ONE = "mcd_erfc/one_{}"


def rewrite(model: onnx.ModelProto) -> Rewrite:
    """Replace every ``Erfc`` node (subgraphs included) by ``Erf`` and a subtraction from 1."""
    result = copy_model(model)
    changes: list[str] = []
    ones: dict[int, str] = {}
    _rewrite_graph(result.graph, result.graph, ones, changes)
    return Rewrite(result, changes)


def _rewrite_graph(graph: onnx.GraphProto, top: onnx.GraphProto, ones: dict[int, str],
                   changes: list[str]) -> None:
    nodes = []
    for node in graph.node:
        for sub in subgraphs(node):
            _rewrite_graph(sub, top, ones, changes)
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        dtype = tensor_dtype(top, node.input[0])
        if dtype not in ones:
            ones[dtype] = ONE.format(len(ones))
            value = np.ones((), onnx.helper.tensor_dtype_to_np_dtype(dtype))
            top.initializer.append(numpy_helper.from_array(value, ones[dtype]))
        erf = f"{node.name}/erf"
        nodes.append(helper.make_node("Erf", [node.input[0]], [erf], name=erf))
        nodes.append(helper.make_node("Sub", [ones[dtype], erf], list(node.output),
                                      name=f"{node.name}/one_minus_erf"))
        changes.append(f"{node.name}: Erfc -> 1 - Erf")
    del graph.node[:]
    graph.node.extend(nodes)


__all__ = ["rewrite"]
