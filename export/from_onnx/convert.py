"""The prepared ONNX graph -> the converted graph the rewrites take, and the source graph with
its dropout switched on or off for the reference.

Site ``k``'s ``Dropout`` becomes ``Mul(x, mcd_mul_<k>)`` with ``mcd_mul_<k>`` a graph input of
shape ``[1, *mask_shape]``: ONNX's ``Dropout`` output is ``x * mask / (1 - ratio)``, and the
multiplier :mod:`export.rewrites.masks` generates is that ``mask / (1 - ratio)``. Every other
``Dropout`` node becomes ``Identity`` (inference). :mod:`export.rewrites.stochastic` later replaces
the mask inputs by masks generated in the graph.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.from_onnx.sites import node_name
from export.rewrites.graph import Rewrite, copy_model, drop_unread_initializers
from scorer.contract import DropoutSite, mask_inputs


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


def with_dropout(model: onnx.ModelProto, training: Collection[str], seed: int = 0
                 ) -> onnx.ModelProto:
    """The source graph with the ``Dropout`` nodes named in ``training`` sampling (ONNX Runtime's
    own dropout, seeded) and every other one in inference."""
    result = copy_model(model)
    graph = result.graph
    modes = {}
    for value in (False, True):
        name = f"mcd_reference/training_{str(value).lower()}"
        graph.initializer.append(numpy_helper.from_array(np.array(value), name))
        modes[value] = name
    for node in graph.node:
        if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
            continue
        inputs = list(node.input) + [""] * (3 - len(node.input))
        inputs[2] = modes[node_name(node) in training]
        node.input[:] = inputs
        for attribute in list(node.attribute):
            if attribute.name == "seed":
                node.attribute.remove(attribute)
        node.attribute.append(helper.make_attribute("seed", int(seed)))
    return result


__all__ = ["convert_masked", "with_dropout"]
