"""The report's figures and numbers as functions, for a notebook: predictions (or a results file) in,
a matplotlib Figure or the numbers out.

Each figure function takes ``source``: :class:`scorer.predictions.Predictions`, the path of a
results file, or an :class:`~scorer.report.analysis.Analysis` already made by :func:`analyse`.
The numbers come from :mod:`scorer.report.analysis` (scikit-learn's split: the numbers in one
function, the drawing in another) and the drawing from :mod:`scorer.report.figures`; the HTML
report draws its figures with these same functions::

    from scorer import plots
    plots.std_vs_probability(predictions)                 # the dogs-vs-cats figure
    plots.histogram(predictions, "normalized_entropy", ood_labels=("noise",))
    plots.threshold_split(predictions, "mutual_information", 0.2)   # above/below and accuracy
    plots.image_grid(x_test, predictions, "mutual_information")     # the most uncertain images
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from scorer.report import figures as draw
from scorer.report import numbers
from scorer.report.analysis import MEASURE_TITLES, Analysis, analyse, output_names, scores_of
from scorer.report.columns import CLASS, SCATTER_SERIES, read_table
from scorer.report.errors import ReportUsageError
from scorer.report.load import PredictionsReader, ResultsReader
from scorer.report.options import ReportOptions
from scorer.report.thumbs import extreme_rows


def analysis_of(source: Any, ood_labels: tuple[str, ...] = (), max_points: int = 20000,
                flag_fraction: float = 0.1) -> Analysis:
    """Every number of the report for ``source`` (predictions, a results file or an analysis)."""
    if isinstance(source, Analysis):
        return source
    options = ReportOptions(ood_labels=tuple(ood_labels), max_points=max_points,
                            flag_fraction=flag_fraction)
    reader = ResultsReader(Path(source)) if isinstance(source, str | Path) else \
        PredictionsReader(source)
    with reader:
        return analyse(read_table(reader, options.ood_labels, max_points, options.seed), options)


def std_vs_probability(source: Any, ood_labels: tuple[str, ...] = (), max_points: int = 20000):
    """Std over passes against the mean probability, coloured by correct, wrong and OOD labels:
    of the predicted class (softmax), of the positive class (one-unit sigmoid), of every output
    (multi-label and regression heads)."""
    analysis = analysis_of(source, ood_labels, max_points)
    table = analysis.table
    info, scatter = table.info, table.scatter
    if scatter is None or scatter.x.size == 0:
        raise ReportUsageError("no scored image to draw: every row failed, or the results "
                               "have no mean and std")
    if info.kind == "probabilities":
        label = ("P(positive class)" if info.binary_sigmoid
                 else "mean probability of the predicted class")
        return draw.scatter_figure(scatter, label, None)
    names = output_names(table)[:SCATTER_SERIES]
    if info.kind == "multilabel" and info.num_outputs > SCATTER_SERIES:
        scatter = dataclasses.replace(scatter, series=np.zeros_like(scatter.series))
        names = ["all labels"]
    label = "mean probability of each label" if info.kind == "multilabel" else "mean value"
    return draw.scatter_figure(scatter, label, names)


def histogram(source: Any, measure: str = "mutual_information",
              groups: tuple[str, ...] | None = None, ood_labels: tuple[str, ...] = ()):
    """The distribution of one measure, split by group: ``("correct", "wrong")`` for labelled
    images, ``("in-distribution", "OOD")`` with ``ood_labels``, else ``("all",)`` (the default
    picks the first that applies)."""
    analysis = analysis_of(source, ood_labels)
    if groups is None:
        groups = ("in-distribution", "OOD") if analysis.ood else \
            ("correct", "wrong") if analysis.correct is not None else ("all",)
    source_histogram = (analysis.ood[measure].histogram if "OOD" in groups and measure in
                        analysis.ood else analysis.histograms.get(measure))
    if source_histogram is None:
        known = sorted(set(analysis.histograms) | set(analysis.ood))
        raise ReportUsageError(f"no histogram of {measure!r} for groups {groups}; the measures "
                               f"are: {', '.join(known)} (OOD groups need ood_labels)")
    return draw.histogram_figure(source_histogram, groups, MEASURE_TITLES.get(measure, measure))


def reliability(source: Any):
    """The reliability diagram (needs labels that are class names or indices)."""
    analysis = analysis_of(source)
    if analysis.calibration is None:
        raise ReportUsageError("a reliability diagram needs scored images whose labels are "
                               "classes of the model; pass labels= to predict")
    return draw.reliability_figure(analysis.calibration)


def rejection(source: Any):
    """Accuracy-rejection curves, one per measure, with the oracle (needs class labels)."""
    analysis = analysis_of(source)
    if analysis.calibration is None:
        raise ReportUsageError("accuracy-rejection curves need scored images whose labels are "
                               "classes of the model; pass labels= to predict")
    return draw.rejection_figure(analysis.selective, analysis.oracle,
                                 analysis.classification["accuracy"])


def threshold_split(source: Any, measure: str, threshold: float) -> numbers.FlagSplit:
    """Labelled images at or above ``threshold`` of ``measure`` (flagged) and below it: how many
    are flagged and the accuracy of each group."""
    analysis = analysis_of(source)
    if analysis.correct is None:
        raise ReportUsageError("the accuracy of each group needs scored images whose labels "
                               "are classes of the model; pass labels= to predict")
    scores = scores_of(analysis.table)
    if measure not in scores:
        raise ReportUsageError(f"no measure {measure!r}; there are: {', '.join(scores)}")
    labelled = analysis.table.ok & (analysis.table.label_role == CLASS)
    return numbers.threshold_split(scores[measure][labelled], analysis.correct[labelled], threshold)


def image_grid(images: np.ndarray, source: Any, measure: str = "mutual_information",
               count: int = 8, most: bool = True):
    """The ``count`` most (or least) uncertain images by ``measure``, drawn from the array the
    predictions were made on, each titled with its prediction, label and uncertainty."""
    analysis = analysis_of(source)
    table = analysis.table
    if measure not in table.measures:
        raise ReportUsageError(f"no measure {measure!r}; there are: {', '.join(table.measures)}")
    rows = extreme_rows(table, count, measure)[0 if most else 1]
    pixels = np.asarray(images)
    if len(pixels) != table.info.rows:
        raise ReportUsageError(f"{len(pixels)} images for predictions of {table.info.rows}; "
                               "give the array the predictions were made on")
    names = output_names(table)
    columns = min(4, max(1, len(rows)))
    figure = draw.blank_figure(2.2 * columns, 2.5 * max(1, math.ceil(len(rows) / columns)))
    axes = figure.subplots(max(1, math.ceil(len(rows) / columns)), columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows, strict=False):
        image = pixels[row]
        ax.imshow(image if image.ndim == 2 or image.shape[-1] != 1 else image[..., 0],
                  cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None)
        title = f"{MEASURE_TITLES.get(measure, measure)} {table.measures[measure][row]:.3f}"
        if table.predicted is not None and table.predicted[row] >= 0:
            title = f"{names[table.predicted[row]]}, " + title
        if table.label_codes is not None:
            title += f"\nlabel {table.label_values[table.label_codes[row]]}"
        ax.set_title(title, fontsize=7)
    figure.suptitle(f"{'most' if most else 'least'} uncertain by "
                    f"{MEASURE_TITLES.get(measure, measure)}", fontsize=9)
    return figure
