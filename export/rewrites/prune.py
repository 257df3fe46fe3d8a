"""Graph rewrite: keep the sampled sites' mask inputs, renumbered; the other sites become identity.

The converted graph has one mask input per candidate dropout site. A site is left out when
``--mc-layers`` does not select it (it then acts as in inference: ``x * 1``, its mask input becomes a
constant) or when nothing reads its mask (dropout on another output's branch, with ``--output``;
the input is dropped). The kept inputs are renumbered ``0..K-1`` so that site ``k`` of the metadata
is mask input ``k``. Reads inside subgraphs (``If`` branches, ``Loop`` bodies) count and are renamed
too.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from export.rewrites.graph import (
    Rewrite,
    consumed,
    copy_model,
    drop_unread_initializers,
    rename_consumed,
    walk,
)
from scorer.contract import MASK_ADD, MASK_MUL, mask_site

IDENTITY = "mcd_off/{}"


def used_sites(masked: onnx.ModelProto, count: int) -> list[int]:
    """Indices ``k < count`` of the sites whose mask input some node (or subgraph) reads."""
    read = {name for _, node in walk(masked.graph) for name in consumed(node)}
    return [k for k in range(count) if MASK_MUL.format(k) in read]


def keep_sites(masked: onnx.ModelProto, count: int, keep: list[int]) -> Rewrite:
    """A copy of ``masked`` with only the mask inputs of sites ``keep``, renumbered in order; the
    masks of the other sites are constants (multiply by 1, add 0)."""
    model = copy_model(masked)
    graph = model.graph
    renamed, changes = {}, []
    for new, old in enumerate(keep):
        for pattern in (MASK_MUL, MASK_ADD):
            renamed[pattern.format(old)] = pattern.format(new)
        if new != old:
            changes.append(f"site {old} is now site {new}")
    inputs = []
    for info in graph.input:
        site = mask_site(info.name)
        if site is None or site >= count or site in keep:
            inputs.append(info)
            continue
        constant = IDENTITY.format(info.name)
        value = 1.0 if info.name == MASK_MUL.format(site) else 0.0
        shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
        graph.initializer.append(numpy_helper.from_array(np.full(shape, value, np.float32), constant))
        renamed[info.name] = constant
        if info.name == MASK_MUL.format(site):
            changes.append(f"site {site} not sampled: its mask is the constant 1")
    for info in inputs:
        info.name = renamed.get(info.name, info.name)
    del graph.input[:]
    graph.input.extend(inputs)
    for node in graph.node:
        rename_consumed(node, renamed)
    # the identity constants of sites on other outputs' branches
    drop_unread_initializers(graph, lambda name: name.startswith(IDENTITY.format("")))
    return Rewrite(model, changes)


__all__ = ["keep_sites", "used_sites"]
