"""Graph rewrite: drop the dropout sites that do not reach the chosen output.

With ``--output`` on a multi-output model, dropout layers on other branches still become mask
inputs of the converted graph, but nothing reads them. They are removed and the remaining mask
inputs renumbered ``0..K-1`` so that site ``k`` of the metadata is mask input ``k``.
"""

from __future__ import annotations

import onnx

from export.convert_names import ADD_INPUT, MUL_INPUT
from scorer.contract import DropoutSite


def used_sites(masked: onnx.ModelProto, sites: list[DropoutSite]) -> list[int]:
    """Indices of the sites whose mask input some node reads."""
    read = {name for node in masked.graph.node for name in node.input}
    return [k for k in range(len(sites)) if MUL_INPUT.format(k) in read]


def keep_sites(
    masked: onnx.ModelProto, sites: list[DropoutSite], keep: list[int]
) -> tuple[onnx.ModelProto, list[DropoutSite]]:
    """A copy of ``masked`` with only the sites ``keep`` (renumbered in order) and those sites."""
    model = onnx.ModelProto()
    model.CopyFrom(masked)
    graph = model.graph
    renamed = {}
    for new, old in enumerate(keep):
        renamed[MUL_INPUT.format(old)] = MUL_INPUT.format(new)
        renamed[ADD_INPUT.format(old)] = ADD_INPUT.format(new)
    dropped = {MUL_INPUT.format(k) for k in range(len(sites)) if k not in keep}
    dropped |= {ADD_INPUT.format(k) for k in range(len(sites)) if k not in keep}
    inputs = [i for i in graph.input if i.name not in dropped]
    for info in inputs:
        info.name = renamed.get(info.name, info.name)
    del graph.input[:]
    graph.input.extend(inputs)
    for node in graph.node:
        for j, name in enumerate(node.input):
            node.input[j] = renamed.get(name, name)
    return model, [sites[k] for k in keep]
