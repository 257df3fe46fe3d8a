"""Checks that an exported graph reproduces its source model, run by default on every export.

The source is seen through a :class:`Reference`: Keras itself for Keras models
(:mod:`export.from_keras.reference`), ONNX Runtime on the source graph for ONNX models
(:mod:`export.from_onnx.reference`).

1. Conversion: the converted graph with all masks set to 1 matches the reference's inference
   (dropout off) within the tolerance.
2. Masks: for a few passes, the final graph matches the reference with the same masks (computed by
   the numpy twin of the in-graph generator) applied at the same sites, within the tolerance.
3. Statistics: passes differ, and the MC mean over many passes agrees with the reference's own
   dropout-only MC mean within a statistical tolerance.

The tolerance of checks 1 and 2 is the user's (``--tolerance``), else :data:`FACTOR` times the
graph's float32 noise floor measured on the same images and masks (:mod:`export.checks.noise`),
and never below 1e-5: differences of float rounding between the frameworks pass on every CPU,
conversion errors, far above rounding, fail.

Every ONNX Runtime and reference call is sized by the memory budget (:mod:`export.checks.memory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import onnx
import onnxruntime as ort

from export.checks.memory import Budget, Footprint
from export.checks.noise import FACTOR, noise_floor
from export.checks.probe import mask_feeds, ones_masks, session
from export.errors import ValidationError
from export.options import ATOL, Head
from export.rewrites.masks import mask_values_np
from scorer.contract import (
    INPUT_IMAGES,
    OUTPUT_PASSES,
    DropoutSite,
    feeds,
)

Z_LIMIT = 6.0
MASK_PASSES = (0, 1, 17)  # the passes check 2 compares


class Reference(Protocol):
    """The source model, run by its own framework: what the exported graph must reproduce.

    Every method returns the head's output ``[N, width]`` (``[N, T, width]`` for passes) and runs
    in calls of at most ``rows`` images (or image-pass rows).
    """

    name: str  # "Keras", "the source graph" (in the checks' messages)

    def predict(self, images: np.ndarray, rows: int) -> np.ndarray:
        """Inference: every dropout site off."""

    def with_masks(self, images: np.ndarray, sites: Sequence[DropoutSite],
                   muls: Sequence[np.ndarray], adds: Sequence[np.ndarray | None],
                   rows: int) -> np.ndarray:
        """Site ``k`` computing ``x * muls[k] + adds[k]`` (``[1, *mask_shape]``), the rest off."""

    def dropout_passes(self, images: np.ndarray, sites: Sequence[DropoutSite], passes: int,
                       rows: int) -> np.ndarray:
        """The framework's own MC dropout at ``sites`` only: ``passes`` sampled passes."""


@dataclass
class Report:
    """One line per check, for the command's short report."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


@dataclass
class Validation:
    """What every check needs: the reference, the inputs, the tolerance and the memory plan.

    ``tolerance``: the user's bound of the exact checks; ``None`` (the default) sets it from the
    noise floor (:meth:`measure_floor`).
    """

    reference: Reference
    head: Head
    sites: Sequence[DropoutSite]
    images: np.ndarray
    seed: int
    footprint: Footprint
    budget: Budget
    tolerance: float | None = None
    report: Report = field(default_factory=Report)
    floor: float | None = None  # the measured noise floor, when tolerance is None

    @property
    def reference_rows(self) -> int:
        return self.budget.keras_rows(self.footprint)

    @property
    def bound(self) -> float:
        """The exact checks' tolerance: the user's, else FACTOR x the floor, at least 1e-5."""
        if self.tolerance is not None:
            return self.tolerance
        return max(ATOL, FACTOR * (self.floor or 0.0))

    def why(self) -> str:
        """Where :attr:`bound` comes from, for the report and the errors."""
        if self.tolerance is not None:
            return f"{self.tolerance:g} (--tolerance)"
        floor = self.floor or 0.0
        if FACTOR * floor <= ATOL:
            return (f"{ATOL:g} (the minimum; float32 noise floor {floor:.2g} x {FACTOR:g} is "
                    "below it)")
        return f"{self.bound:.2g} ({FACTOR:g} x the float32 noise floor {floor:.2g})"

    def pass_masks(self, t: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each site's ``(mul, add)`` of pass ``t``, from the numpy twin of the generator."""
        return [mask_values_np(site, k, self.seed, np.array([t]))
                for k, site in enumerate(self.sites)]

    def measure_floor(self, masked: onnx.ModelProto, pass_indices=MASK_PASSES) -> None:
        """Measure the noise floor of the converted graph on the checks' images, with the masks
        of checks 1 and 2 (all ones, and those of ``pass_indices``); a no-op when the user set
        the tolerance."""
        if self.tolerance is not None:
            return
        sets = [mask_feeds(self.sites, ones_masks)]
        for t in pass_indices:
            values = self.pass_masks(t)
            sets.append(mask_feeds(self.sites, lambda k, site, values=values: values[k]))
        self.floor = noise_floor(masked, self.images, sets, self.budget.graph_rows(self.footprint))
        self.report.add(f"tolerance of the exact checks: {self.why()}; float32 noise floor: the "
                        "largest output change with every weight and pixel moved by one ulp")


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
    want = v.reference.predict(v.images, v.reference_rows)
    _close(f"dropout off: ONNX vs {v.reference.name} predict", got, want, v.report, v.bound,
           v.reference.name, why=v.why())


def check_masks(final: onnx.ModelProto, v: Validation, pass_indices=MASK_PASSES) -> None:
    """Check 2 (see module docstring)."""
    sess = session(final)
    worst = 0.0
    rows = v.budget.graph_rows(v.footprint)
    for t in pass_indices:
        got = np.concatenate([run_passes(sess, v.images[i:i + rows], v.seed, t, 1)[:, 0]
                              for i in range(0, len(v.images), rows)])
        muls, adds = zip(*v.pass_masks(t), strict=True)
        want = v.reference.with_masks(v.images, v.sites, muls, adds, v.reference_rows)
        want = as_classes(want, v.head.activation, v.head.width)
        worst = max(worst, _close(f"pass {t}: ONNX vs {v.reference.name} with the same masks",
                                  got, want, None, v.bound, v.reference.name, why=v.why()))
    v.report.add(f"same masks: ONNX matches {v.reference.name} on passes {list(pass_indices)} "
                 f"(max |diff| {worst:.2e} <= {v.bound:.2g})")


def check_statistics(final: onnx.ModelProto, v: Validation, passes: int) -> None:
    """Check 3 (see module docstring)."""
    per_call = v.budget.graph_passes(v.footprint, len(v.images))
    ours = run_passes(session(final), v.images, v.seed, 0, passes, per_call).astype(np.float64)
    theirs = v.reference.dropout_passes(v.images, v.sites, passes, v.reference_rows)
    theirs = as_classes(theirs, v.head.activation, v.head.width).astype(np.float64)
    spread = ours.std(axis=1).max()
    if spread == 0:
        if theirs.std(axis=1).max() > 0:
            raise ValidationError(
                f"all MC passes are identical although {v.reference.name}'s dropout passes differ: "
                "the dropout "
                "masks have no effect on the exported graph's output"
            )
        v.report.add(f"passes do not differ on random inputs, in {v.reference.name}'s own MC "
                     "dropout either "
                     f"({passes} passes): dropout has no visible effect on these inputs")
        return
    error = np.sqrt(ours.var(axis=1) / passes + theirs.var(axis=1) / passes) + 1e-6
    z = np.abs(ours.mean(axis=1) - theirs.mean(axis=1)) / error
    if z.max() > Z_LIMIT:
        raise ValidationError(
            f"MC mean over {passes} passes differs from {v.reference.name}'s dropout MC mean by "
            f"{z.max():.1f} standard errors (limit {Z_LIMIT}); the stochastic graph is not "
            f"{v.reference.name}'s dropout"
        )
    v.report.add(f"MC mean over {passes} passes agrees with {v.reference.name} dropout "
                 f"(max {z.max():.1f} standard errors, limit {Z_LIMIT:g}); passes differ "
                 f"(max std {spread:.3g})")


def _close(
    what: str, got: np.ndarray, want: np.ndarray, report: Report | None, tolerance: float = ATOL,
    source: str = "Keras", why: str = "",
) -> float:
    """Max |got - want|; raise unless ``|got - want| <= tolerance * (1 + |want|)`` everywhere.

    ``why``: where the tolerance comes from (:meth:`Validation.why`), for the message.
    """
    if got.shape != want.shape:
        raise ValidationError(f"{what}: shape {got.shape} != {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    if not np.allclose(got, want, atol=tolerance, rtol=tolerance):
        raise ValidationError(
            f"{what}: max |diff| {diff:.3g} exceeds {tolerance:.2g} (+{tolerance:.2g} relative; "
            f"tolerance {why or f'{tolerance:g}'}); the exported graph does not reproduce the "
            f"{source} model. The default tolerance already allows {FACTOR:g} times the float "
            "rounding this graph shows: a larger difference is most likely a conversion error "
            "(report it); --tolerance sets the bound yourself"
        )
    if report is not None:
        report.add(f"{what}: max |diff| {diff:.2e} <= {tolerance:.2g}")
    return diff


