"""Check: every node of the converted graph is a standard ONNX op; else name the Keras layers.

tf2onnx leaves TensorFlow ops it cannot convert in the graph under their TensorFlow names
(``StatefulPartitionedCall``, ``Erfc``, ...), and ONNX Runtime then refuses the whole file with a
message about a node nobody wrote. This check runs right after conversion and the rewrites that fix
known cases, and raises one :class:`~export.errors.UnsupportedModelError` that lists the layers
responsible, by name and class, with their TensorFlow ops.

TensorFlow names each node after the scopes of the layers it belongs to
(``model/convnext_tiny_1/stage_3_block_1_gelu_1/Gelu/Erfc``; Keras adds ``_1``-style suffixes to
scope names); the deepest scope that names a layer of the model is the layer reported.
"""

from __future__ import annotations

import re

import onnx

from export.errors import UnsupportedModelError
from export.rewrites.graph import walk

SUFFIX = re.compile(r"_\d+$")


def unknown_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes (subgraphs included) whose op has no ONNX schema at the model's opset."""
    found = []
    for _, node in walk(model.graph):
        domain = "" if node.domain == "ai.onnx" else node.domain
        if not onnx.defs.has(node.op_type, domain):
            found.append(node)
    return found


def layer_of(node_name: str, layer_classes: dict[str, str]) -> str | None:
    """The name of the deepest layer whose scope ``node_name`` lies in, if any."""
    scopes = node_name.split("/")[:-1]
    for scope in reversed(scopes):
        for candidate in (scope, SUFFIX.sub("", scope)):
            if candidate in layer_classes:
                return candidate
    return None


def check(model: onnx.ModelProto, layer_classes: dict[str, str]) -> None:
    """Raise if the graph has nodes that are not ONNX ops, listing their layers.

    Args:
        model: the converted graph.
        layer_classes: every layer's name -> its class name.
    """
    nodes = unknown_nodes(model)
    if not nodes:
        return
    by_layer: dict[str, set[str]] = {}
    for node in nodes:
        layer = layer_of(node.name, layer_classes)
        key = f"{layer} ({layer_classes[layer]})" if layer else f"node {node.name} (no Keras layer)"
        by_layer.setdefault(key, set()).add(node.op_type)
    listing = "; ".join(f"{key}: {', '.join(sorted(ops))}" for key, ops in sorted(by_layer.items()))
    raise UnsupportedModelError(
        f"{len(by_layer)} layer{'s' if len(by_layer) > 1 else ''} of the model use TensorFlow "
        f"operations that tf2onnx cannot convert to ONNX: {listing}. Replace "
        f"{'them' if len(by_layer) > 1 else 'it'} with standard Keras layers (the weights can "
        "usually be copied over) and export again"
    )


__all__ = ["check", "layer_of", "unknown_nodes"]
