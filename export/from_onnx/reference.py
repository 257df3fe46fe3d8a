"""ONNX Runtime on the source graph: the reference an ONNX model's export is validated against.

Inference runs the prepared source graph with every ``Dropout`` in inference mode (ONNX Runtime's
own ``Dropout`` kernel). Given masks, and the MC passes, run the converted graph, whose sites read
their masks as inputs: the passes draw ONNX ``Dropout``'s masks (keep with probability
``1 - ratio``, scaled by ``1 / (1 - ratio)``) from numpy's generator, one ``run`` a pass, not from
the in-graph generator under test.

Not ONNX Runtime's own sampling ``Dropout``: in onnxruntime 1.31 on the CPU, the first element of
its mask is the same in every ``run`` of a session (always dropped with ``seed=0``, always kept
without a seed; measured over 5,000 runs), so its MC mean is biased wherever that element matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from export.checks.probe import mask_feeds, session
from export.from_onnx.convert import in_inference
from scorer.contract import INPUT_IMAGES, DropoutSite


@dataclass
class OnnxReference:
    """:class:`export.checks.validate.Reference` for an ONNX source."""

    prepared: onnx.ModelProto  # the source graph, prepared (input, head, BatchNormalization)
    masked: onnx.ModelProto  # the converted graph with the sampled sites' mask inputs
    seed: int = 0
    name: str = "the source graph"
    _sessions: dict = field(default_factory=dict, repr=False)

    def predict(self, images: np.ndarray, rows: int) -> np.ndarray:
        sess = self._session("off", lambda: session(in_inference(self.prepared)))
        return _chunked(sess, {}, images, rows)

    def with_masks(self, images: np.ndarray, sites: Sequence[DropoutSite],
                   muls: Sequence[np.ndarray], adds: Sequence[np.ndarray | None],
                   rows: int) -> np.ndarray:
        sess = self._session("masked", lambda: session(self.masked))
        masks = mask_feeds(sites, lambda k, site: (muls[k], adds[k]))
        return _chunked(sess, masks, images, rows)

    def dropout_passes(self, images: np.ndarray, sites: Sequence[DropoutSite], passes: int,
                       rows: int) -> np.ndarray:
        sess = self._session("masked", lambda: session(self.masked))
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(passes):
            masks = mask_feeds(sites, lambda k, site: (dropout_mask(rng, site), None))
            out.append(_chunked(sess, masks, images, rows))
        return np.stack(out, axis=1)

    def _session(self, key, make):
        if key not in self._sessions:
            self._sessions[key] = make()
        return self._sessions[key]


def dropout_mask(rng: np.random.Generator, site: DropoutSite) -> np.ndarray:
    """One pass's multiplier of ONNX ``Dropout`` at ``site``: ``[1, *mask_shape]``."""
    keep = rng.random((1, *site.mask_shape)) >= site.rate
    return (keep / (1.0 - site.rate)).astype(np.float32)


def _chunked(sess: ort.InferenceSession, masks: dict[str, np.ndarray], images: np.ndarray,
             rows: int) -> np.ndarray:
    rows = max(1, rows)
    return np.concatenate([sess.run(None, {INPUT_IMAGES: images[i:i + rows], **masks})[0]
                           for i in range(0, len(images), rows)]).astype(np.float32)


__all__ = ["OnnxReference"]
