"""The report's numbers: from the per-row table to every section, and its JSON summary.

Pure: no file access, no figures. Each section is ``None`` when it does not apply (no labels, no
``--ood`` images, a head kind without classes, no scored rows), so every head kind and a file of
failed rows only go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scorer.report import numbers
from scorer.report.columns import CLASS, OOD, OTHER, UNLABELLED, RowTable
from scorer.report.options import ReportOptions

SUMMARY_VERSION = 1
COVERAGES = (0.9, 0.8, 0.5)
OOD_KEEP = 0.95
NLL_FLOOR = 1e-12
"""The probability of the true class is clipped at this before the log (NLL at most 27.6)."""
MEASURE_TITLES = {
    "predictive_entropy": "predictive entropy",
    "normalized_entropy": "normalized entropy",
    "mutual_information": "mutual information",
    "expected_entropy": "expected entropy",
    "variation_ratio": "variation ratio",
    "std": "std",
    "max_probability": "1 - max probability",
}


@dataclass
class Histogram:
    """Counts of one measure over shared ``edges`` ``[B + 1]``, one ``[B]`` array per group."""

    edges: np.ndarray
    groups: dict[str, np.ndarray]


@dataclass
class Selective:
    """Selective prediction with one uncertainty measure (most confident kept first)."""

    aurc: float | None
    accuracy_at: dict[float, float | None]
    misclassification_auroc: float | None
    coverage: np.ndarray
    accuracy: np.ndarray


@dataclass
class OodResult:
    """Detection of out-of-distribution rows by one measure."""

    auroc: float | None
    aupr: float | None
    fpr_at_95_tpr: float | None
    flagging: numbers.OodFlagging | None
    histogram: Histogram | None


@dataclass
class Analysis:
    """All numbers of the report. See :func:`analyse`."""

    table: RowTable
    options: ReportOptions
    failures: dict[str, int]
    label_counts: dict[str, int]
    other_labels: dict[str, int]
    missing_ood_labels: list[str]
    distributions: dict[str, dict[str, float] | None]
    histograms: dict[str, Histogram]
    correct: np.ndarray | None = None
    classification: dict[str, Any] | None = None
    calibration: numbers.Calibration | None = None
    selective: dict[str, Selective] = field(default_factory=dict)
    oracle: tuple[np.ndarray, np.ndarray] | None = None
    flagged: dict[str, numbers.FlagSplit] = field(default_factory=dict)
    ood: dict[str, OodResult] = field(default_factory=dict)
    ood_counts: tuple[int, int] = (0, 0)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON summary: stable keys, ``None`` (``null``) where a number does not apply."""
        return summary_json(self)


def scores_of(table: RowTable) -> dict[str, np.ndarray]:
    """Uncertainty scores ``[N]`` (higher = more uncertain), with the max-probability baseline."""
    scores = dict(table.measures)
    if table.confidence is not None:
        scores["max_probability"] = 1.0 - table.confidence.astype(np.float64)
    return scores


def _histogram(values: np.ndarray, groups: dict[str, np.ndarray], measure: str,
               passes: int | None) -> Histogram:
    finite = values[np.isfinite(values)]
    if measure == "variation_ratio" and passes and passes <= 100:
        edges = (np.arange(passes + 2) - 0.5) / passes
    else:
        edges = numbers.histogram_edges(finite)
    return Histogram(edges, {name: np.histogram(values[rows], edges)[0]
                             for name, rows in groups.items()})


def analyse(table: RowTable, options: ReportOptions) -> Analysis:
    """Compute every section of the report from ``table``."""
    ok = table.ok
    failures = {table.status_values[code]: int(count)
                for code, count in enumerate(np.bincount(table.status_codes,
                                                         minlength=len(table.status_values)))
                if table.status_values[code] != "ok" and count}
    roles = table.label_role[ok]
    label_counts = {name: int(np.sum(roles == role)) for name, role in
                    (("class", CLASS), ("ood", OOD), ("other", OTHER), ("unlabelled", UNLABELLED))}
    other_labels: dict[str, int] = {}
    present: set[str] = set()
    if table.label_codes is not None:
        counts = np.bincount(table.label_codes[ok], minlength=len(table.label_values))
        for code, count in enumerate(counts):
            present.add(table.label_values[code])
            if count and table.label_value_roles[code] == OTHER:
                other_labels[table.label_values[code]] = int(count)
    missing = [label for label in options.ood_labels if label not in present]
    passes = table.info.passes
    groups = {"all": ok}
    analysis = Analysis(table, options, failures, label_counts, other_labels, missing, {}, {})
    in_dist = ok & (table.label_role == CLASS) if table.info.kind == "probabilities" else \
        ok & (table.label_role == OTHER)
    out_dist = ok & (table.label_role == OOD)
    if table.predicted is not None and table.true_probability is not None:
        labelled = ok & (table.label_role == CLASS) & np.isfinite(table.confidence) & \
            np.isfinite(table.true_probability)
        if labelled.any():
            analysis.correct = labelled & (table.predicted == table.true_class)
            groups.update(correct=analysis.correct, wrong=labelled & ~analysis.correct)
            _classification(analysis, labelled)
    if in_dist.any() and out_dist.any():
        analysis.ood_counts = (int(in_dist.sum()), int(out_dist.sum()))
        _ood(analysis, in_dist, out_dist)
    for name, values in table.measures.items():
        analysis.distributions[name] = numbers.quantiles(values[ok & np.isfinite(values)])
        if ok.any():
            analysis.histograms[name] = _histogram(values, groups, name, passes)
    analysis.outputs = _outputs(table)
    return analysis


def _classification(analysis: Analysis, labelled: np.ndarray) -> None:
    table, options = analysis.table, analysis.options
    correct = analysis.correct[labelled]
    confidence = table.confidence[labelled].astype(np.float64)
    true_probability = np.clip(table.true_probability[labelled], NLL_FLOOR, None)
    analysis.calibration = numbers.calibration(confidence, correct)
    analysis.classification = {
        "images": int(labelled.sum()),
        "accuracy": float(correct.mean()),
        "nll": float(-np.log(true_probability).mean()),
        "brier": float(table.brier[labelled].mean()),
        "ece": analysis.calibration.ece,
        "ece_bins": numbers.ECE_BINS,
    }
    del confidence, true_probability  # a copy of each labelled row: 10**7 rows are 160 MB
    count = int(labelled.sum())
    for name, values in scores_of(table).items():
        scores = values[labelled].astype(np.float64)
        finite = np.isfinite(scores)  # all of them in a sound file; a damaged one must not crash
        if not finite.all():
            scores, kept = scores[finite], correct[finite]
        else:
            kept = correct
        del finite
        if scores.size == 0:
            continue
        risk = numbers.risk_coverage(scores, kept)
        index, sampled = numbers.downsample(risk)
        aurc = numbers.aurc(risk)
        accuracy_at = {c: numbers.accuracy_at_coverage(risk, c) for c in COVERAGES}
        del risk
        analysis.selective[name] = Selective(
            aurc=aurc, accuracy_at=accuracy_at,
            misclassification_auroc=numbers.roc_auc(scores, ~kept),
            coverage=(index + 1) / scores.size, accuracy=1.0 - sampled)
        analysis.flagged[name] = numbers.flag_split(scores, kept, options.flag_fraction)
    kept = np.arange(1, count + 1)
    index, oracle_correct = numbers.downsample(np.minimum(kept, int(correct.sum())) / kept)
    analysis.oracle = ((index + 1) / count, oracle_correct)


def _ood(analysis: Analysis, in_dist: np.ndarray, out_dist: np.ndarray) -> None:
    table = analysis.table
    rows = in_dist | out_dist
    positives = out_dist[rows]
    for name, values in scores_of(table).items():
        scores = values[rows].astype(np.float64)
        finite = np.isfinite(scores)
        scores, flags = scores[finite], positives[finite]
        histogram = None
        if scores.size:
            histogram = _histogram(scores, {"in-distribution": ~flags, "OOD": flags}, name,
                                   table.info.passes)
        ranked = numbers.ranking(scores, flags, OOD_KEEP)
        analysis.ood[name] = OodResult(
            auroc=ranked.auroc, aupr=ranked.average_precision, fpr_at_95_tpr=ranked.fpr_at_tpr,
            flagging=numbers.ood_flagging(scores[~flags], scores[flags], OOD_KEEP),
            histogram=histogram)


def output_names(table: RowTable) -> list[str]:
    """Names of the ``C`` outputs: class names, else ``output 0``, ``output 1``, ..."""
    info = table.info
    return list(info.class_names) or [f"output {c}" for c in range(info.num_outputs)]


def _outputs(table: RowTable) -> list[dict[str, Any]]:
    """Per-output summary rows (classes, labels or regression values)."""
    sums, scored = table.outputs, int(table.ok.sum())
    if sums is None or scored == 0:
        return []
    kind = table.info.kind
    rows = []
    for c, name in enumerate(output_names(table)):
        row: dict[str, Any] = {"name": name, "mean": sums.mean[c] / scored,
                               "mean_std": sums.std[c] / scored, "max_std": float(sums.std_max[c])}
        if kind == "multilabel":
            row["share_above_half"] = sums.positive[c] / scored
            row["mean_label_mi"] = None if sums.label_mi is None else sums.label_mi[c] / scored
        if kind == "probabilities":
            row["predicted"] = int(np.sum(table.predicted[table.ok] == c))
            truth = table.ok & (table.true_class == c)
            row["images"] = int(truth.sum())
            row["recall"] = float(np.mean(table.predicted[truth] == c)) if truth.any() else None
        rows.append({k: float(v) if isinstance(v, np.floating) else v for k, v in row.items()})
    return rows


def summary_json(analysis: Analysis) -> dict[str, Any]:
    """The stable-key JSON summary of an analysis (documented in the README)."""
    table, info = analysis.table, analysis.table.info
    scored = int(table.ok.sum())
    result: dict[str, Any] = {
        "summary_version": SUMMARY_VERSION,
        "results": {"file": str(info.path), "kind": info.kind, "num_outputs": info.num_outputs,
                    "passes": info.passes, "schema_version": info.schema_version,
                    "rows": info.rows, "scored": scored, "failed": info.rows - scored},
        "failures": analysis.failures,
        "labels": {**analysis.label_counts, "other_labels": analysis.other_labels,
                   "ood_labels": list(analysis.options.ood_labels),
                   "ood_labels_missing": analysis.missing_ood_labels},
        "distributions": analysis.distributions,
        "scatter": None if table.scatter is None else {
            "rows_shown": table.scatter.rows_shown, "rows_total": table.scatter.rows_total},
        "classification": None, "selective": None, "flagged": None, "ood": None,
        "outputs": analysis.outputs,
    }
    if analysis.classification is not None:
        cal = analysis.calibration
        bins = [{"lower": float(cal.edges[b]), "upper": float(cal.edges[b + 1]),
                 "count": int(cal.counts[b]),
                 "accuracy": None if cal.counts[b] == 0 else float(cal.accuracy[b]),
                 "confidence": None if cal.counts[b] == 0 else float(cal.confidence[b])}
                for b in range(len(cal.counts))]
        result["classification"] = {**analysis.classification, "reliability": bins}
        result["selective"] = {name: {
            "aurc": s.aurc,
            **{f"accuracy_at_coverage_{round(c * 100)}": s.accuracy_at[c] for c in COVERAGES},
            "misclassification_auroc": s.misclassification_auroc,
        } for name, s in analysis.selective.items()}
        result["flagged"] = {"fraction": analysis.options.flag_fraction, "measures": {
            name: {"threshold": f.threshold, "flagged": f.flagged,
                   "accuracy_flagged": f.accuracy_flagged, "accuracy_rest": f.accuracy_rest}
            for name, f in analysis.flagged.items()}}
    if analysis.ood:
        result["ood"] = {"in_distribution": analysis.ood_counts[0], "ood": analysis.ood_counts[1],
                         "measures": {name: {
                             "auroc": o.auroc, "aupr": o.aupr, "fpr_at_95_tpr": o.fpr_at_95_tpr,
                             "threshold_95_in": None if o.flagging is None else o.flagging.threshold,
                             "ood_flagged_at_95_in": None if o.flagging is None
                             else o.flagging.ood_flagged} for name, o in analysis.ood.items()}}
    return result
