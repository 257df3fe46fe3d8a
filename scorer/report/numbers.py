"""Pure numpy metrics of the report: ranking, calibration and selective prediction.

Every function takes 1-D arrays over the ``n`` rows it is given (``[n]``) and returns numbers; no
I/O, no figures. Uncertainty scores are "higher = more uncertain"; ties are handled so that
results never depend on row order:

- AUROC and average precision group tied scores into one threshold (as scikit-learn does), so a
  tie counts half towards AUROC.
- Risk-coverage curves take the expectation over a random order within tied scores: inside a
  group of ``g`` tied rows with ``e`` errors, each retained row adds ``e / g`` expected errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ECE_BINS = 15


def _as_1d(values: np.ndarray, name: str, dtype: type = np.float64) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D [n], got shape {array.shape}")
    return array


def _pair(scores: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_1d(scores, "scores")
    flags = _as_1d(flags, "flags", bool)
    if scores.shape != flags.shape:
        raise ValueError(f"scores {scores.shape} and flags {flags.shape} differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite; drop failed rows (NaN) first")
    return scores, flags


def _roc_points(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, highest score first.

    Written for 10**7 rows: about 40 bytes a row at the peak (each temporary freed early).
    """
    order = np.argsort(scores)[::-1]  # order within tied scores does not matter: groups are summed
    ranked, hits = scores[order], positives[order]
    del order
    group_ends = np.empty(ranked.size, dtype=bool)
    np.not_equal(ranked[1:], ranked[:-1], out=group_ends[:-1])
    group_ends[-1:] = True
    del ranked
    last_of_group = np.flatnonzero(group_ends)
    del group_ends
    true_pos = np.cumsum(hits, dtype=np.float64)[last_of_group]
    false_pos = (last_of_group + 1) - true_pos
    return true_pos, false_pos


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` ``[n]`` for detecting ``positives`` ``[n]`` (bool).

    Returns:
        The AUROC (trapezoids between distinct thresholds), or ``None`` when either class is empty.
    """
    return ranking(scores, positives).auroc


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Average precision (area under the precision-recall curve, step-wise) of ``scores`` ``[n]``.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds, highest first.

    Returns:
        AP, or ``None`` when there are no positives or no negatives.
    """
    return ranking(scores, positives).average_precision


def fpr_at_tpr(scores: np.ndarray, positives: np.ndarray, tpr_level: float = 0.95) -> float | None:
    """False-positive rate at the highest threshold whose true-positive rate reaches ``tpr_level``.

    Returns:
        The FPR, or ``None`` when either class is empty.
    """
    return ranking(scores, positives, tpr_level).fpr_at_tpr


@dataclass(frozen=True)
class Ranking:
    """AUROC, average precision and FPR at a TPR level of one score, from one sort."""

    auroc: float | None
    average_precision: float | None
    fpr_at_tpr: float | None


def ranking(scores: np.ndarray, positives: np.ndarray, tpr_level: float = 0.95) -> Ranking:
    """:func:`roc_auc`, :func:`average_precision` and :func:`fpr_at_tpr` sorting ``scores`` once."""
    scores, positives = _pair(scores, positives)
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return Ranking(None, None, None)
    true_pos, false_pos = _roc_points(scores, positives)
    return Ranking(_auroc(true_pos, false_pos, n_pos, n_neg), _ap(true_pos, false_pos, n_pos),
                   _fpr_at(true_pos, false_pos, n_pos, n_neg, tpr_level))


def _auroc(true_pos: np.ndarray, false_pos: np.ndarray, n_pos: int, n_neg: int) -> float:
    tpr = np.r_[0.0, true_pos / n_pos]
    fpr = np.r_[0.0, false_pos / n_neg]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _ap(true_pos: np.ndarray, false_pos: np.ndarray, n_pos: int) -> float:
    precision = true_pos / (true_pos + false_pos)
    return float(np.sum(np.diff(np.r_[0.0, true_pos / n_pos]) * precision))


def _fpr_at(true_pos: np.ndarray, false_pos: np.ndarray, n_pos: int, n_neg: int, level: float) -> float:
    first = int(np.searchsorted(true_pos / n_pos, level - 1e-12, side="left"))
    return float(false_pos[first] / n_neg)


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and the reliability diagram's bins.

    Attributes:
        edges: ``[B + 1]`` bin edges on the top-label confidence; bin ``b`` holds
            ``edges[b] < confidence <= edges[b + 1]`` (the first bin also holds 0).
        counts: ``[B]`` rows per bin.
        accuracy: ``[B]`` accuracy per bin (NaN for empty bins).
        confidence: ``[B]`` mean confidence per bin (NaN for empty bins).
        ece: ``sum_b counts[b] / n * |accuracy[b] - confidence[b]|``.
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ece: float


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Calibration | None:
    """ECE with ``bins`` equal-width bins over [0, 1] on the top-label ``confidence`` ``[n]``.

    Returns:
        The bins and the ECE, or ``None`` for ``n == 0``.
    """
    confidence, correct = _pair(confidence, correct)
    if confidence.size == 0:
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_conf), 0.0)
    ece = float(np.sum(counts * gaps) / confidence.size)
    return Calibration(edges, counts, accuracy, mean_conf, ece)


def risk_coverage(uncertainty: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Selective risk when keeping the ``k`` most confident rows, for ``k = 1..n``.

    Rows are retained by increasing ``uncertainty`` ``[n]``; within tied scores the expected
    number of errors is used (see the module docstring).

    Returns:
        ``risk`` ``[n]``: ``risk[k - 1]`` is the error rate among the ``k`` rows kept, at
        coverage ``k / n``.
    """
    uncertainty, correct = _pair(uncertainty, correct)
    n = uncertainty.size
    if n == 0:
        return np.zeros(0)
    # about 50 bytes a row at the peak for 10**7 rows: each temporary is freed as soon as it is used
    order = np.argsort(uncertainty)  # order within ties does not matter: groups are averaged
    ranked, errors = uncertainty[order], ~correct[order]
    del order
    starts_group = np.empty(n, dtype=bool)
    starts_group[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=starts_group[1:])
    del ranked
    starts = np.flatnonzero(starts_group)
    cumulative = np.cumsum(errors, dtype=np.float64)  # errors among the first k rows
    del errors
    position = np.arange(1, n + 1, dtype=np.float64)
    if starts.size == n:  # no ties
        cumulative /= position
        return cumulative
    ends = np.r_[starts[1:], n]
    group_errors = cumulative[ends - 1] - np.r_[0.0, cumulative[ends[:-1] - 1]]
    del cumulative
    before = np.r_[0.0, np.cumsum(group_errors)[:-1]]
    rate = group_errors / (ends - starts)
    group = np.cumsum(starts_group) - 1
    del starts_group
    expected = position - starts[group]
    expected *= rate[group]
    expected += before[group]
    expected /= position
    return expected


def aurc(risk: np.ndarray) -> float | None:
    """Area under the risk-coverage curve: ``(1/n) sum_k risk[k]`` (``None`` for ``n == 0``)."""
    return float(np.mean(risk)) if len(risk) else None


def accuracy_at_coverage(risk: np.ndarray, coverage: float) -> float | None:
    """Accuracy among the ``ceil(coverage * n)`` most confident rows (``None`` for ``n == 0``)."""
    n = len(risk)
    if n == 0:
        return None
    keep = max(1, math.ceil(round(coverage * n, 9)))
    return float(1.0 - risk[keep - 1])


def downsample(values: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, values[indices])`` at about ``points`` evenly spaced indices, ends included."""
    n = len(values)
    spaced = np.linspace(0, n - 1, points).round().astype(np.int64) if n > points else None
    index = np.arange(n) if spaced is None else np.unique(spaced)
    return index, np.asarray(values)[index]


@dataclass(frozen=True)
class FlagSplit:
    """Accuracy among the most uncertain rows vs the rest.

    Attributes:
        threshold: Rows with ``uncertainty >= threshold`` are flagged.
        flagged: Rows flagged (ties can make this more than the fraction asked for).
        accuracy_flagged: Accuracy among the flagged rows (``None`` if none).
        accuracy_rest: Accuracy among the others (``None`` if none).
    """

    threshold: float
    flagged: int
    accuracy_flagged: float | None
    accuracy_rest: float | None


def flag_split(uncertainty: np.ndarray, correct: np.ndarray, fraction: float) -> FlagSplit | None:
    """Flag the ``ceil(fraction * n)`` most uncertain rows (``[n]``): threshold at that order statistic.

    Returns:
        The split, or ``None`` for ``n == 0``.
    """
    uncertainty, correct = _pair(uncertainty, correct)
    n = uncertainty.size
    if n == 0:
        return None
    count = min(n, max(1, math.ceil(round(fraction * n, 9))))
    return threshold_split(uncertainty, correct,
                           float(np.partition(uncertainty, n - count)[n - count]))


def threshold_split(uncertainty: np.ndarray, correct: np.ndarray, threshold: float) -> FlagSplit:
    """Rows at or above ``threshold`` (flagged) and below it, with the accuracy of each group
    (``None`` for an empty group): the printout of the MNIST recipe's uncertainty threshold."""
    uncertainty, correct = _pair(uncertainty, correct)
    flagged = uncertainty >= threshold

    def accuracy(rows: np.ndarray) -> float | None:
        return float(correct[rows].mean()) if rows.any() else None

    return FlagSplit(float(threshold), int(flagged.sum()), accuracy(flagged), accuracy(~flagged))


@dataclass(frozen=True)
class OodFlagging:
    """OOD rows flagged at the threshold that keeps a given share of in-distribution rows.

    Attributes:
        threshold: The ``ceil(keep * n_in)``-th smallest in-distribution score; rows above it
            are flagged.
        in_kept: Share of in-distribution rows at or below the threshold (``>= keep``).
        ood_flagged: Share of OOD rows above the threshold.
    """

    threshold: float
    in_kept: float
    ood_flagged: float


def ood_flagging(in_scores: np.ndarray, ood_scores: np.ndarray, keep: float = 0.95) -> OodFlagging | None:
    """Threshold keeping ``keep`` of ``in_scores`` ``[n_in]``; share of ``ood_scores`` above it.

    Returns:
        The flagging, or ``None`` when either group is empty.
    """
    in_scores = _as_1d(in_scores, "in_scores")
    ood_scores = _as_1d(ood_scores, "ood_scores")
    if in_scores.size == 0 or ood_scores.size == 0:
        return None
    rank = min(in_scores.size, max(1, math.ceil(round(keep * in_scores.size, 9))))
    threshold = float(np.partition(in_scores, rank - 1)[rank - 1])
    return OodFlagging(threshold, float(np.mean(in_scores <= threshold)),
                       float(np.mean(ood_scores > threshold)))


def quantiles(values: np.ndarray) -> dict[str, float] | None:
    """``mean``, ``median``, ``p10``, ``p90``, ``min`` and ``max`` of ``values`` ``[n]`` (None if empty)."""
    values = _as_1d(values, "values")
    if values.size == 0:
        return None
    p10, median, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {"mean": float(values.mean()), "median": float(median), "p10": float(p10),
            "p90": float(p90), "min": float(values.min()), "max": float(values.max())}


def histogram_edges(values: np.ndarray, bins: int = 40) -> np.ndarray:
    """``[bins + 1]`` equal-width edges from ``min(0, min)`` to the maximum of ``values`` ``[n]``."""
    values = _as_1d(values, "values")
    low = min(0.0, float(values.min())) if values.size else 0.0
    high = float(values.max()) if values.size else 1.0
    if high <= low:
        high = low + 1.0
    return np.linspace(low, high, bins + 1)
