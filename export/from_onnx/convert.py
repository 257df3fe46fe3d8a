"""The prepared ONNX graph -> the converted graph the rewrites take, and the source graph with
its dropout off (inference) for the reference and for probing.

Site ``k``'s ``Dropout`` becomes ``Mul(x, mcd_mul_<k>)`` with ``mcd_mul_<k>`` a graph input of
shape ``[1, *mask_shape]``: ONNX's ``Dropout`` output is ``x * mask / (1 - ratio)``, and the
multiplier :mod:`export.rewrites.masks` generates is that ``mask / (1 - ratio)``. Every other
``Dropout`` node becomes ``Identity`` (inference). :mod:`export.rewrites.stochastic` later replaces
the mask inputs by masks generated in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.from_onnx.sites import node_name
from export.rewrites.graph import Rewrite, copy_model, drop_unread_initializers
from scorer.contract import DropoutSite, mask_inputs

INFERENCE_MODE = "mcd_reference/training_false"


def convert_masked(model: onnx.ModelProto, sites: Sequence[DropoutSite]) -> Rewrite:
    """Sites (by node name, ``DropoutSite.path``) -> mask inputs; other Dropout nodes -> Identity."""
    result = copy_model(model)
    graph = result.graph
    index = {site.path: k for k, site in enumerate(sites)}
    changes = []
    for position, node in enumerate(graph.node):
        if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
            continue
        name = node_name(node)
        if name in index:
            k = index[name]
            (mul,) = mask_inputs(k)
            new = helper.make_node("Mul", [node.input[0], mul], [node.output[0]], name=name)
            changes.append(f"{name}: Dropout {sites[k].rate:g} -> Mul by mask input {mul}")
        else:
            new = helper.make_node("Identity", [node.input[0]], [node.output[0]], name=name)
            changes.append(f"{name}: Dropout -> Identity (inference)")
        graph.node[position].CopyFrom(new)
    for k, site in enumerate(sites):
        (mul,) = mask_inputs(k)
        graph.input.append(helper.make_tensor_value_info(mul, onnx.TensorProto.FLOAT,
                                                         [1, *site.mask_shape]))
    outputs = {o.name for o in graph.output}
    drop_unread_initializers(graph, lambda name: name not in outputs)  # Dropout ratios, modes
    return Rewrite(result, changes)


def in_inference(model: onnx.ModelProto) -> onnx.ModelProto:
    """The source graph with every ``Dropout`` in inference mode (ONNX Runtime's own kernel,
    identity): the reference's dropout-off output, and the graph the sites are probed on."""
    result = copy_model(model)
    graph = result.graph
    graph.initializer.append(numpy_helper.from_array(np.array(False), INFERENCE_MODE))
    for node in graph.node:
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            inputs = list(node.input) + [""] * (3 - len(node.input))
            inputs[2] = INFERENCE_MODE
            node.input[:] = inputs
    return result


__all__ = ["convert_masked", "in_inference"]
