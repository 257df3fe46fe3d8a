"""Running an ONNX graph on the CPU to learn about it: intermediate tensors, mask feeds, ranks.

Shared by validation (:mod:`export.checks.validate`), the memory estimate
(:mod:`export.checks.memory`) and trunk caching (:func:`frontier_ranks`); none of them is a check
itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from scorer.contract import INPUT_IMAGES, DropoutSite, mask_inputs


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def mask_feeds(sites: Sequence[DropoutSite], value_of) -> dict[str, np.ndarray]:
    """Feeds for the converted graph's mask inputs, ``value_of(k, site) -> (mul, add)``."""
    feeds = {}
    for k, site in enumerate(sites):
        feeds.update(zip(mask_inputs(k, site.additive), value_of(k, site), strict=False))
    return feeds


def ones_masks(k: int, site: DropoutSite):
    ones = np.ones((1, *site.mask_shape), np.float32)
    return ones, np.zeros_like(ones)


def probe_tensors(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], names: list[str]
) -> list[dict[str, np.ndarray]]:
    """Values of intermediate tensors ``names`` for each feed dict, from one session of a copy of
    ``model`` with those tensors added as outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = session(copy)
    return [dict(zip(names, sess.run(names, one), strict=True)) for one in feeds]


def frontier_ranks(
    masked: onnx.ModelProto, sites: Sequence[DropoutSite], frontier: list[str],
    shape: tuple[int, ...],
) -> dict[str, int] | None:
    """Ranks of the frontier tensors if all of them carry the batch on axis 0, else None."""
    batches = (2, 3)
    feeds = [{INPUT_IMAGES: np.zeros((batch, *shape), np.float32), **mask_feeds(sites, ones_masks)}
             for batch in batches]
    ranks: dict[str, int] = {}
    for batch, values in zip(batches, probe_tensors(masked, feeds, frontier), strict=True):
        for name, value in values.items():
            if value.ndim == 0 or value.shape[0] != batch or not np.issubdtype(
                value.dtype, np.floating
            ):
                return None
            ranks[name] = value.ndim
    return ranks
