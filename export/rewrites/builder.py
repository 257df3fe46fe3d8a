"""A small helper for appending nodes to an ONNX graph with unique names."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.rewrites.graph import consumed


class GraphBuilder:
    """Appends nodes and constant initializers to ``graph`` under a name prefix.

    Every method returns the name of the tensor it produced, so subgraphs read like expressions.
    """

    def __init__(self, graph: onnx.GraphProto, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix
        self._count = 0
        self.nodes: list[onnx.NodeProto] = []

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, value: np.ndarray | int | float, dtype: type | np.dtype, hint: str = "c") -> str:
        """Add an initializer holding ``value`` cast to ``dtype``."""
        name = self.name(hint)
        array = np.asarray(value, dtype=dtype)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs) -> str:
        """Add one single-output node and return its output name."""
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def op_to(self, output: str, op_type: str, *inputs: str, **attrs) -> str:
        """Add one node writing to the given output name."""
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=self.name(op_type), **attrs)
        )
        return output

    def flush(self) -> None:
        """Append the collected nodes to the graph (callers re-sort the graph afterwards)."""
        self.graph.node.extend(self.nodes)
        self.nodes = []


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of what it reads (its inputs
    and its subgraphs' reads of outer tensors)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in consumed(node)):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            missing = sorted({n for node in remaining for n in consumed(node)} - available)
            raise ValueError(f"graph has a cycle or unknown inputs: {missing[:5]}")
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)
