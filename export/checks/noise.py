"""The float32 noise floor of a converted graph: how far its output moves when its numbers move by
one rounding, the scale the exact checks' default tolerance is set from.

Two runtimes computing the same float32 network differ by rounding: the order of a sum (oneDNN's
AVX-512 kernels against MLAS), a fused multiply-add, a different Winograd tile. How large that
gets at the output depends on the network (its depth, its BatchNormalization statistics, how
sharp its head is), not only on the CPU, so a fixed bound that holds for one model on one CPU
fails for another. The floor measures it on the model itself: ONNX Runtime runs the converted
graph (the masks fed as inputs) as it is and with every float weight and every input pixel moved
by one unit in the last place, up or down at random (zeros kept), and the largest output change
is the floor. Measured over every architecture of docs/export.md, with TensorFlow's oneDNN on and
off, BatchNormalization calibrated or sharpened: the TensorFlow-ONNX Runtime difference stayed
within 5.2 times the floor wherever it exceeded 1e-5 (``scripts/validate_architectures.py``
prints both for each architecture).

The floor perturbs numbers, never the graph, so a conversion error (a wrong weight, a missed site,
a mask off, a preprocessing step scaled wrongly) does not raise it: the error shows as a
difference far above rounding. ONNX Runtime's optimised against unoptimised run is no floor: it
would hide the optimiser's own semantic errors, which the checks are there to catch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from export.checks.probe import session
from scorer.contract import INPUT_IMAGES

FACTOR = 16.0  # default tolerance: this many times the floor (3x the largest ratio measured)
COPIES = 2  # perturbed copies of the graph; the floor is the largest change over them


def one_ulp(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` (float32) each moved one unit in the last place up or down at random; zeros
    (pruned weights, padding, black pixels) stay zero."""
    up = rng.random(values.shape) < 0.5
    moved = np.where(up, np.nextafter(values, np.float32(np.inf)),
                     np.nextafter(values, np.float32(-np.inf)))
    return np.where(values == 0, values, moved).astype(np.float32)


def perturbed(model: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    """A copy of ``model`` whose float32 initializers are each moved by one ulp."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(one_ulp(numpy_helper.to_array(init), rng),
                                                  init.name))
    return copy


def noise_floor(masked: onnx.ModelProto, images: np.ndarray, mask_sets: Sequence[dict],
                rows: int, seed: int = 0) -> float:
    """The largest output change of ``masked`` (the converted graph with mask inputs) over
    ``COPIES`` perturbed copies, for each feed of masks in ``mask_sets``, in calls of ``rows``.

    ``rows`` images per call, as the checks run them (the floor depends on the call's size only
    through the kernels it picks, as theirs does).
    """
    rng = np.random.default_rng(seed)
    base = session(masked)
    copies = [session(perturbed(masked, rng)) for _ in range(COPIES)]
    floor = 0.0
    for masks in mask_sets:
        for first in range(0, len(images), rows):
            chunk = images[first:first + rows]
            want = base.run(None, {INPUT_IMAGES: chunk, **masks})[0]
            for sess in copies:
                got = sess.run(None, {INPUT_IMAGES: one_ulp(chunk, rng), **masks})[0]
                floor = max(floor, float(np.max(np.abs(got.astype(np.float64) - want))))
    return floor


__all__ = ["COPIES", "FACTOR", "noise_floor", "one_ulp", "perturbed"]
