"""What every graph rewrite shares: the pass contract and walks that recurse into subgraphs.

A rewrite is a pure function ``ModelProto -> Rewrite``: it never modifies its argument, and it
returns the new model together with a human-readable list of what it changed, so that the caller
can fail loudly when a rewrite that had to change something changed nothing.

Control-flow nodes (``If``, ``Loop``, ``Scan``) carry subgraphs that may read tensors of the
enclosing graph by name without listing them as node inputs. :func:`consumed` includes those implicit
reads, :func:`walk` visits the nodes of every nested graph and :func:`rename_consumed` renames reads
inside subgraphs as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import onnx


class Rewrite(NamedTuple):
    """The result of a graph rewrite: the new model and one line per change."""

    model: onnx.ModelProto
    changes: list[str]


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy, so rewrites stay pure."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held by ``node``'s attributes (``If`` branches, ``Loop``/``Scan`` bodies)."""
    found = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            found.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            found.extend(attribute.graphs)
    return found


def walk(graph: onnx.GraphProto) -> Iterator[tuple[onnx.GraphProto, onnx.NodeProto]]:
    """Every ``(graph, node)`` pair of ``graph`` and of its nested subgraphs, outer nodes first."""
    for node in graph.node:
        yield graph, node
        for sub in subgraphs(node):
            yield from walk(sub)


def outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads but does not define itself: tensors of the enclosing scopes."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    reads: set[str] = set()
    for node in graph.node:
        reads.update(name for name in node.input if name not in defined)
        for sub in subgraphs(node):
            reads.update(name for name in outer_reads(sub) if name not in defined)
        defined.update(node.output)
    return reads


def consumed(node: onnx.NodeProto) -> list[str]:
    """The tensors ``node`` reads: its inputs, then what its subgraphs read from outside."""
    names = [name for name in node.input if name]
    for sub in subgraphs(node):
        names.extend(sorted(name for name in outer_reads(sub) if name not in names))
    return names


def drop_unread_initializers(graph: onnx.GraphProto, candidates: Callable[[str], bool]) -> None:
    """Remove the initializers whose name ``candidates`` accepts and that no node (subgraphs
    included) reads."""
    read = {name for _, node in walk(graph) for name in consumed(node)}
    for init in [i for i in graph.initializer if candidates(i.name) and i.name not in read]:
        graph.initializer.remove(init)


def rename_consumed(node: onnx.NodeProto, mapping: dict[str, str]) -> int:
    """Rename what ``node`` reads (inputs and subgraph reads of outer tensors); return the count.

    A subgraph that defines a name itself (input, initializer or node output) shadows the outer one;
    reads of such a name inside it are left alone.
    """
    count = 0
    for j, name in enumerate(node.input):
        if name in mapping:
            node.input[j] = mapping[name]
            count += 1
    for sub in subgraphs(node):
        count += _rename_in_subgraph(sub, mapping)
    return count


def _rename_in_subgraph(graph: onnx.GraphProto, mapping: dict[str, str]) -> int:
    shadowed = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    shadowed |= {name for node in graph.node for name in node.output}
    visible = {k: v for k, v in mapping.items() if k not in shadowed}
    if not visible:
        return 0
    return sum(rename_consumed(node, visible) for node in graph.node)


def dependents(graph: onnx.GraphProto, sources: set[str]) -> tuple[set[str], list[int]]:
    """Tensors computed from ``sources`` (sources included) and the indices of the top-level nodes
    reading them, directly or inside their subgraphs. ``graph.node`` must be topologically sorted."""
    reached = set(sources)
    nodes = []
    for i, node in enumerate(graph.node):
        if any(name in reached for name in consumed(node)):
            reached.update(node.output)
            nodes.append(i)
    return reached, nodes


def tensor_dtype(graph: onnx.GraphProto, name: str) -> int:
    """The element type of tensor ``name`` from the graph's declared types (float32 if unknown)."""
    for info in [*graph.value_info, *graph.input, *graph.output]:
        if info.name == name and info.type.tensor_type.elem_type:
            return info.type.tensor_type.elem_type
    for init in graph.initializer:
        if init.name == name:
            return init.data_type
    return onnx.TensorProto.FLOAT


__all__ = ["Rewrite", "consumed", "copy_model", "dependents", "outer_reads", "rename_consumed",
           "subgraphs", "tensor_dtype", "walk"]
