"""Per-row columns of the report, derived from a results file in one streaming pass.

``[N]`` columns come straight from the file; the per-row quantities that need ``[N, C]`` datasets
(std of the predicted class, probability of the true class, Brier score, per-output sums and the
scatter-plot sample) are computed slice by slice, so memory grows with ``N`` only by a few numbers
per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scorer.report.load import ResultsInfo, ResultsReader
from scorer.results.schema import normalized_entropy

UNLABELLED, CLASS, OOD, OTHER = 0, 1, 2, 3
"""``label_role`` values: no label, a class of the model, an ``--ood`` label, any other label."""
WRONG = 4
"""Scatter series of a ``CLASS`` row whose prediction is wrong (``CLASS`` then means correct)."""

PROBABILITY_MEASURES = ("predictive_entropy", "normalized_entropy", "mutual_information",
                        "expected_entropy", "variation_ratio")
MULTILABEL_MEASURES = ("predictive_entropy", "mutual_information", "expected_entropy")
SCATTER_SERIES = 6
"""At most this many outputs of a values head get their own scatter series."""


@dataclass
class Scatter:
    """A (sampled) scatter plot of std against mean.

    Attributes:
        x: ``[k]`` mean probability or value.
        y: ``[k]`` its standard deviation over passes.
        series: ``[k]`` int: the row's label role, ``WRONG`` for misclassified ``CLASS`` rows
            (probabilities), or the output index (other heads).
        rows_shown: Rows whose points are drawn.
        rows_total: Scored rows that could have been drawn.
    """

    x: np.ndarray
    y: np.ndarray
    series: np.ndarray
    rows_shown: int
    rows_total: int

    @property
    def sampled(self) -> bool:
        """Whether only a random sample of the rows is drawn."""
        return self.rows_shown < self.rows_total


@dataclass
class OutputSums:
    """Per-output sums over scored rows, ``[C]`` each (what the per-output table divides)."""

    mean: np.ndarray
    std: np.ndarray
    std_max: np.ndarray
    positive: np.ndarray
    label_mi: np.ndarray | None = None


@dataclass
class RowTable:
    """Everything the report computes from, one entry per row (``[N]`` arrays).

    Attributes:
        info: The results file's description.
        ok: Rows scored successfully.
        status_codes: Index into ``status_values`` for each row.
        status_values: Distinct ``status`` texts.
        label_values: Distinct ``label`` texts (``[]`` without labels).
        label_codes: Index into ``label_values``, or ``None`` without labels.
        label_value_roles: Role of each of ``label_values``.
        label_role: ``UNLABELLED``, ``CLASS``, ``OOD`` or ``OTHER`` per row.
        true_class: Class index of ``CLASS`` rows, else -1.
        measures: Uncertainty scores, higher is more uncertain, NaN for failed rows.
        predicted: Predicted class (-1 failed); probabilities only.
        confidence: Mean probability of the predicted class; probabilities only.
        true_probability: Mean probability of the true class (NaN unless a ``CLASS`` row).
        brier: ``sum_c (mean[c] - onehot[c])**2`` (NaN unless a ``CLASS`` row).
        outputs: Per-output sums over scored rows.
        scatter: The std vs mean sample.
    """

    info: ResultsInfo
    ok: np.ndarray
    status_codes: np.ndarray
    status_values: list[str]
    label_values: list[str]
    label_codes: np.ndarray | None
    label_value_roles: np.ndarray
    label_role: np.ndarray
    true_class: np.ndarray
    measures: dict[str, np.ndarray] = field(default_factory=dict)
    predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None
    true_probability: np.ndarray | None = None
    brier: np.ndarray | None = None
    outputs: OutputSums | None = None
    scatter: Scatter | None = None

    @property
    def ranking_measure(self) -> str:
        """The measure the thumbnails are ordered by: mutual information, else std."""
        return "mutual_information" if "mutual_information" in self.measures else "std"


def label_roles(values: list[str], info: ResultsInfo,
                ood_labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Role and class index of each distinct label text.

    A label is a class when it equals a class name or, with no class names, is the decimal index
    of an output (probabilities heads only).

    Returns:
        ``roles`` int8 and ``classes`` int64 (-1 unless a class), both ``[len(values)]``.
    """
    names = {name: i for i, name in enumerate(info.class_names)}
    if not names:
        names = {str(i): i for i in range(info.num_outputs)}
    roles = np.full(len(values), OTHER, dtype=np.int8)
    classes = np.full(len(values), -1, dtype=np.int64)
    for i, text in enumerate(values):
        if text == "":
            roles[i] = UNLABELLED
        elif text in ood_labels:
            roles[i] = OOD
        elif info.kind == "probabilities" and text in names:
            roles[i], classes[i] = CLASS, names[text]
    return roles, classes


def read_table(reader: ResultsReader, ood_labels: tuple[str, ...] = (), max_points: int = 20000,
               seed: int = 0) -> RowTable:
    """Read and derive the per-row columns of a results file (one pass over ``[N, C]``).

    Args:
        reader: The open results file.
        ood_labels: Labels that mark out-of-distribution images.
        max_points: Most rows drawn in the scatter plot; more are sampled uniformly.
        seed: Seed of the scatter-plot sample.
    """
    info = reader.info
    n = info.rows
    status_codes, status_values = reader.categories("status")
    ok = status_codes == (status_values.index("ok") if "ok" in status_values else -1)
    label_values: list[str] = []
    label_codes = None
    roles = np.zeros(0, dtype=np.int8)
    role = np.zeros(n, dtype=np.int8)
    true_class = np.full(n, -1, dtype=np.int64)
    if reader.has("label"):
        label_codes, label_values = reader.categories("label")
        roles, classes = label_roles(label_values, info, ood_labels)
        role, true_class = roles[label_codes], classes[label_codes]
    table = RowTable(info, ok, status_codes, status_values, label_values, label_codes, roles, role,
                     true_class)
    for name in PROBABILITY_MEASURES if info.kind == "probabilities" else (
            MULTILABEL_MEASURES if info.kind == "multilabel" else ()):
        if reader.has(name):
            table.measures[name] = np.where(ok, reader.column(name), np.float32(np.nan))
        elif name == "normalized_entropy" and "predictive_entropy" in table.measures \
                and info.num_outputs > 1:  # files written before the dataset existed
            table.measures[name] = normalized_entropy(
                table.measures["predictive_entropy"], info.num_outputs).astype(np.float32)
    if info.kind == "probabilities" and reader.has("predicted_class"):
        table.predicted = np.where(ok, reader.column("predicted_class", "int64"), -1)
    if info.kind == "probabilities" and reader.has("confidence"):
        table.confidence = np.where(ok, reader.column("confidence"), np.float32(np.nan))
    if reader.has("mean") and reader.has("std") and info.num_outputs > 0:
        _stream_matrices(reader, table, max_points, seed)
    return table


def _sample_rows(ok: np.ndarray, rows: int, seed: int) -> np.ndarray:
    candidates = np.flatnonzero(ok)
    if candidates.size <= rows:
        return candidates
    return np.sort(np.random.default_rng(seed).choice(candidates, rows, replace=False))


def _stream_matrices(reader: ResultsReader, table: RowTable, max_points: int, seed: int) -> None:
    """Fill the columns that need ``mean``/``std`` ``[N, C]``, reading them in row slices."""
    info, n, width = table.info, table.info.rows, table.info.num_outputs
    kind, ok = info.kind, table.ok
    rows_drawn = max_points if kind == "probabilities" else max(1, max_points // min(width,
                                                                                    SCATTER_SERIES))
    sample = _sample_rows(ok, rows_drawn, seed)
    names = ["mean", "std"]
    with_mi = kind == "multilabel" and reader.has("label_mutual_information")
    if with_mi:
        names.append("label_mutual_information")
    sums = OutputSums(np.zeros(width), np.zeros(width), np.zeros(width), np.zeros(width),
                      np.zeros(width) if with_mi else None)
    spread = np.full(n, np.nan, dtype=np.float32)
    if kind == "probabilities":
        need_argmax = table.predicted is None or table.confidence is None
        predicted = np.full(n, -1, dtype=np.int64) if need_argmax else table.predicted
        confidence = np.full(n, np.nan, np.float32) if need_argmax else table.confidence
        true_probability = np.full(n, np.nan)
        brier = np.full(n, np.nan)
    points: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start, block in reader.matrix_chunks(names):
        mean, std = block["mean"], block["std"]
        stop = start + mean.shape[0]
        good = ok[start:stop]
        rows = np.arange(mean.shape[0])
        sums.mean += mean[good].sum(axis=0)
        sums.std += std[good].sum(axis=0)
        if good.any():
            sums.std_max = np.maximum(sums.std_max, std[good].max(axis=0))
        sums.positive += (mean[good] > 0.5).sum(axis=0)
        if with_mi:
            sums.label_mi += block["label_mutual_information"][good].sum(axis=0)
        picked = sample[(sample >= start) & (sample < stop)] - start
        if kind == "probabilities":
            if need_argmax:
                predicted[start:stop] = np.where(good, mean.argmax(axis=1), -1)
                confidence[start:stop] = np.where(good, mean.max(axis=1), np.nan)
            top = np.clip(predicted[start:stop], 0, width - 1)
            spread[start:stop] = np.where(good, std[rows, top], np.nan)
            truth = table.true_class[start:stop]
            known = good & (truth >= 0)
            p_true = mean[rows, np.clip(truth, 0, width - 1)]
            true_probability[start:stop] = np.where(known, p_true, np.nan)
            brier[start:stop] = np.where(known, (mean**2).sum(axis=1) - 2 * p_true + 1, np.nan)
            column = 1 if info.binary_sigmoid else None
            x = confidence[start:stop][picked] if column is None else mean[picked, column]
            y = spread[start:stop][picked] if column is None else std[picked, column]
            role = table.label_role[start:stop][picked].astype(np.int64)
            role[(role == CLASS) & (predicted[start:stop][picked] != truth[picked])] = WRONG
            points.append((x, y, role))
        else:
            spread[start:stop] = np.where(good, std.mean(axis=1), np.nan)
            shown = width if kind == "multilabel" else min(width, SCATTER_SERIES)
            series = np.broadcast_to(np.arange(shown), (picked.size, shown))
            points.append((mean[picked, :shown].ravel(), std[picked, :shown].ravel(), series.ravel()))
    table.measures["std"] = spread
    table.outputs = sums
    if kind == "probabilities":
        table.predicted, table.confidence = predicted, confidence
        table.true_probability, table.brier = true_probability, brier
    if points:
        x, y, series = (np.concatenate(parts) for parts in zip(*points, strict=True))
    else:
        x, y, series = np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    table.scatter = Scatter(x, y, series, int(sample.size), int(ok.sum()))
