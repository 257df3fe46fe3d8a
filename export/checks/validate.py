"""Checks that an exported graph reproduces the Keras model, run by default on every export.

1. Conversion: the converted graph with all masks set to 1 matches Keras ``predict`` within the
   tolerance (1e-5 by default).
2. Masks: for a few passes, the final graph matches Keras with the same masks (computed by the numpy
   twin of the in-graph generator) applied to the same layers, within the tolerance.
3. Statistics: passes differ, and the MC mean over many passes agrees with Keras' own dropout-only MC
   mean within a statistical tolerance.

Every ONNX Runtime and Keras call is sized by the memory budget (:mod:`export.checks.memory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from export.checks.memory import Budget, Footprint
from export.checks.probe import mask_feeds, ones_masks, session
from export.errors import ValidationError
from export.from_keras import reference
from export.from_keras.model import Head
from export.rewrites.masks import mask_values_np
from scorer.contract import (
    INPUT_IMAGES,
    OUTPUT_PASSES,
    DropoutSite,
    feeds,
)

ATOL = 1e-5  # absolute and relative tolerance of the exact-parity checks (ExportOptions.tolerance)
Z_LIMIT = 6.0


@dataclass
class Report:
    """One line per check, for the command's short report."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


@dataclass
class Validation:
    """What every check needs: the Keras side, the inputs, the tolerance and the memory plan."""

    model: object  # keras.Model
    head: Head
    sites: Sequence[DropoutSite]
    images: np.ndarray
    seed: int
    footprint: Footprint
    budget: Budget
    tolerance: float = ATOL
    report: Report = field(default_factory=Report)

    @property
    def keras_rows(self) -> int:
        return self.budget.keras_rows(self.footprint)


def run_passes(
    sess: ort.InferenceSession, images: np.ndarray, seed: int, start: int, count: int,
    per_call: int | None = None,
) -> np.ndarray:
    """Run the final graph: ``passes`` output ``[N, T, C]``, ``per_call`` passes per call."""
    per_call = count if per_call is None else max(1, per_call)
    chunks = []
    for first in range(start, start + count, per_call):
        call = feeds(images, seed, first, min(per_call, start + count - first))
        chunks.append(sess.run([OUTPUT_PASSES], call)[0])
    return np.concatenate(chunks, axis=1)


def as_classes(values: np.ndarray, activation: str, width: int) -> np.ndarray:
    """Keras head output ``[N, width]`` in the graph's class layout (one-unit sigmoid -> 2)."""
    if activation == "sigmoid" and width == 1:
        return np.concatenate([1.0 - values, values], axis=-1)
    return values


def check_conversion(masked: onnx.ModelProto, v: Validation) -> None:
    """Check 1 (see module docstring)."""
    sess, rows = session(masked), v.budget.graph_rows(v.footprint)
    masks = mask_feeds(v.sites, ones_masks)
    got = np.concatenate([sess.run(None, {INPUT_IMAGES: v.images[i:i + rows], **masks})[0]
                          for i in range(0, len(v.images), rows)])
    want = reference.keras_predict(v.model, v.images, v.head, v.keras_rows)
    _close("dropout off: ONNX vs Keras predict", got, want, v.report, v.tolerance)


def check_masks(final: onnx.ModelProto, v: Validation, pass_indices=(0, 1, 17)) -> None:
    """Check 2 (see module docstring)."""
    sess = session(final)
    worst = 0.0
    rows = v.budget.graph_rows(v.footprint)
    for t in pass_indices:
        got = np.concatenate([run_passes(sess, v.images[i:i + rows], v.seed, t, 1)[:, 0]
                              for i in range(0, len(v.images), rows)])
        muls, adds = zip(*(mask_values_np(site, k, v.seed, np.array([t]))
                           for k, site in enumerate(v.sites)), strict=True)
        want = reference.keras_with_masks(v.model, v.images, v.head, v.sites, muls, adds,
                                          v.keras_rows)
        want = as_classes(want, v.head.activation, v.head.width)
        worst = max(worst, _close(f"pass {t}: ONNX vs Keras with the same masks", got, want,
                                  None, v.tolerance))
    v.report.add(f"same masks: ONNX matches Keras on passes {list(pass_indices)} "
                 f"(max |diff| {worst:.2e} <= {v.tolerance:g})")


def check_statistics(final: onnx.ModelProto, v: Validation, passes: int) -> None:
    """Check 3 (see module docstring)."""
    per_call = v.budget.graph_passes(v.footprint, len(v.images))
    ours = run_passes(session(final), v.images, v.seed, 0, passes, per_call).astype(np.float64)
    theirs = reference.keras_dropout_passes(v.model, v.images, v.head, v.sites, passes, v.keras_rows)
    theirs = as_classes(theirs, v.head.activation, v.head.width).astype(np.float64)
    spread = ours.std(axis=1).max()
    if spread == 0:
        if theirs.std(axis=1).max() > 0:
            raise ValidationError(
                "all MC passes are identical although Keras' dropout passes differ: the dropout "
                "masks have no effect on the exported graph's output"
            )
        v.report.add(f"passes do not differ on random inputs, in Keras' own MC dropout either "
                     f"({passes} passes): dropout has no visible effect on these inputs")
        return
    error = np.sqrt(ours.var(axis=1) / passes + theirs.var(axis=1) / passes) + 1e-6
    z = np.abs(ours.mean(axis=1) - theirs.mean(axis=1)) / error
    if z.max() > Z_LIMIT:
        raise ValidationError(
            f"MC mean over {passes} passes differs from Keras' dropout MC mean by {z.max():.1f} "
            f"standard errors (limit {Z_LIMIT}); the stochastic graph is not Keras' dropout"
        )
    v.report.add(f"MC mean over {passes} passes agrees with Keras dropout "
                 f"(max {z.max():.1f} standard errors, limit {Z_LIMIT:g}); passes differ "
                 f"(max std {spread:.3g})")


def _close(
    what: str, got: np.ndarray, want: np.ndarray, report: Report | None, tolerance: float = ATOL
) -> float:
    """Max |got - want|; raise unless ``|got - want| <= tolerance * (1 + |want|)`` everywhere."""
    if got.shape != want.shape:
        raise ValidationError(f"{what}: shape {got.shape} != {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    if not np.allclose(got, want, atol=tolerance, rtol=tolerance):
        raise ValidationError(
            f"{what}: max |diff| {diff:.3g} exceeds {tolerance:g} (+{tolerance:g} relative); the "
            "exported graph does not reproduce the Keras model. Deep networks can differ by float "
            "rounding between TensorFlow and ONNX Runtime: if the difference is small, export with "
            "a looser --tolerance (e.g. 1e-4)"
        )
    if report is not None:
        report.add(f"{what}: max |diff| {diff:.2e} <= {tolerance:g}")
    return diff


