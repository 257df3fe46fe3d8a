"""Working-memory estimates of an exported graph, and call sizes that fit a memory budget.

The estimate runs one image with two passes through the final graph and keeps the largest
intermediate tensors: tensors with 2 rows are per image and pass, with 1 row per image. The scorer
plans its ONNX Runtime calls from the same two numbers (``bytes_per_image``,
``bytes_per_image_pass`` in the metadata); validation plans its ONNX Runtime and Keras calls from them
so that exporting a 224x224 model does not take tens of GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from export.checks.probe import probe_tensors
from scorer.contract import INPUT_IMAGES
from scorer.contract import feeds as run_feeds

PROBE_TOP_TENSORS = 4
MB = 2**20
# ONNX Runtime reuses buffers: a call needs about twice its largest live tensors (the estimate).
ORT_FACTOR = 2
# A Keras functional model called eagerly keeps every layer's output until the call ends: a row
# needs about all the graph's intermediate tensors of one image, and TensorFlow's temporaries on top
# (measured on ResNet50 at 224x224: Keras grew by 113 MB per row; its ONNX tensors add up to 106 MB).
KERAS_FACTOR = 1.5


@dataclass(frozen=True)
class Footprint:
    """Working memory in bytes per image (trunk) and per image and pass (stochastic part), and all
    intermediate tensors of the model for one image (``activations``, what Keras holds)."""

    per_image: int
    per_pass: int
    activations: int = 0

    @property
    def per_row(self) -> int:
        """One image through the whole network once (a dropout-off or single-pass call)."""
        return self.per_image + self.per_pass


@dataclass(frozen=True)
class Budget:
    """How many rows or passes one call may take within ``megabytes`` of working memory."""

    megabytes: int

    @property
    def bytes(self) -> int:
        return self.megabytes * MB

    def keras_rows(self, footprint: Footprint) -> int:
        """Images (or image-pass rows) per Keras call."""
        per_row = max(footprint.activations, footprint.per_row)
        return max(1, int(self.bytes // max(1.0, KERAS_FACTOR * per_row)))

    def graph_rows(self, footprint: Footprint) -> int:
        """Images per ONNX Runtime call that runs one pass."""
        return max(1, self.bytes // max(1, ORT_FACTOR * footprint.per_row))

    def graph_passes(self, footprint: Footprint, images: int) -> int:
        """Passes per ONNX Runtime call over ``images`` images (at least 1)."""
        free = self.bytes // ORT_FACTOR - images * footprint.per_image
        return max(1, free // max(1, images * footprint.per_pass))


def estimate(final: onnx.ModelProto, masked: onnx.ModelProto,
             shape: tuple[int, ...]) -> Footprint:
    """The :class:`Footprint` of the final graph (see module docstring); ``activations`` come from
    the converted graph ``masked`` (masks as inputs): the model's own tensors, without the mask
    generator's."""
    per_image, per_pass = [], []
    for rows, nbytes in tensor_sizes(final, run_feeds(np.zeros((1, *shape), np.float32), 0, 0, 2)):
        if rows == 2:
            per_pass.append(nbytes // 2)
        elif rows == 1:
            per_image.append(nbytes)
    top = PROBE_TOP_TENSORS
    return Footprint(sum(sorted(per_image)[-top:]), sum(sorted(per_pass)[-top:]),
                     activations(masked, shape))


def activations(masked: onnx.ModelProto, shape: tuple[int, ...]) -> int:
    """Bytes of all intermediate tensors of ``masked`` for one image, masks all ones."""
    feeds = {INPUT_IMAGES: np.zeros((1, *shape), np.float32)}
    for info in masked.graph.input:
        if info.name != INPUT_IMAGES:
            dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
            feeds[info.name] = np.ones(dims, np.float32)
    return sum(nbytes for rows, nbytes in tensor_sizes(masked, feeds) if rows == 1)


def tensor_sizes(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                 group: int = 400) -> list[tuple[int, int]]:
    """``(rows, bytes)`` of every intermediate tensor of rank >= 1 in one run of ``model``.

    The tensors are probed ``group`` at a time, so only one group's values are held at once.
    """
    names = [o for node in model.graph.node for o in node.output if o]
    sizes = []
    for start in range(0, len(names), group):
        (values,) = probe_tensors(model, [feeds], names[start:start + group])
        sizes.extend((v.shape[0], v.nbytes) for v in values.values() if v.ndim > 0)
    return sizes


__all__ = ["Budget", "Footprint", "estimate", "tensor_sizes"]
