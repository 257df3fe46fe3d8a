"""Matplotlib figures of the report, drawn from numbers computed in :mod:`scorer.report.analysis`.

Figures are built on :class:`matplotlib.figure.Figure` (the Agg canvas; pyplot and its global
state are never used) and rendered to PNG bytes by :func:`png`. matplotlib is the optional
``[report]`` extra: :func:`require_matplotlib` says how to install it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from scorer.report.analysis import MEASURE_TITLES, Histogram, Selective
from scorer.report.columns import CLASS, OOD, WRONG, Scatter
from scorer.report.errors import MissingDependencyError
from scorer.report.numbers import Calibration

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"all": "#4C72B0", "correct": "#55A868", "wrong": "#C44E52",
          "in-distribution": "#4C72B0", "OOD": "#DD8452"}
SERIES_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")
DPI = 100


def require_matplotlib() -> None:
    """Check that matplotlib can be imported.

    Raises:
        MissingDependencyError: It is not installed, with the command that installs it.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            "the HTML report draws its figures with matplotlib, which is not installed; install "
            "it with: pip install 'mcd-score[report]' (or pass --no-html for the JSON summary "
            "only)") from err


def blank_figure(width: float, height: float, constrained: bool = True) -> Figure:
    """An empty Figure of ``width`` x ``height`` inches (no pyplot state)."""
    return _figure(width, height, constrained)


def _figure(width: float, height: float, constrained: bool = True) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def histogram_figure(histogram: Histogram, groups: Sequence[str], title: str) -> Figure:
    """One measure's histogram per group, each as a share of that group's images.

    Args:
        histogram: Counts per group over shared edges (groups not present are skipped).
        groups: Group names to draw, in order, e.g. ``("correct", "wrong")``.
        title: The panel title (the measure).
    """
    figure = _figure(4.2, 2.9, constrained=False)  # fixed margins: layout solving is the slow part
    figure.subplots_adjust(left=0.16, right=0.97, bottom=0.11, top=0.9)
    ax = figure.subplots()
    for group in groups:
        counts = histogram.groups.get(group)
        if counts is None or counts.sum() == 0:
            continue
        ax.stairs(counts / counts.sum(), histogram.edges, color=COLORS.get(group, "#333333"),
                  linewidth=1.6, label=f"{group} ({int(counts.sum()):,})", fill=len(groups) == 1,
                  alpha=0.8 if len(groups) == 1 else 1.0)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("share of images", fontsize=8)
    ax.tick_params(labelsize=8)
    if len(groups) > 1 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)
    return figure


def scatter_figure(scatter: Scatter, x_label: str, series_names: Sequence[str] | None) -> Figure:
    """Std against mean, one colour per series (label role, or output of a multi-output head).

    Args:
        scatter: The points.
        x_label: What the x axis is (e.g. "mean probability of the predicted class").
        series_names: Names of output series, or ``None`` to colour by label role.
    """
    figure = _figure(7.0, 4.6)
    ax = figure.subplots()
    style = {"s": 6, "alpha": 0.45, "linewidths": 0, "rasterized": True}
    if series_names is None:
        roles = ((CLASS, "correct", COLORS["correct"]), (WRONG, "wrong", COLORS["wrong"]),
                 (OOD, "OOD", COLORS["OOD"]))
        other = ~np.isin(scatter.series, [CLASS, WRONG, OOD])
        if other.any():
            ax.scatter(scatter.x[other], scatter.y[other], color="#777777", label="no class label",
                       **style)
        for role, label, color in roles:
            chosen = scatter.series == role
            if chosen.any():
                ax.scatter(scatter.x[chosen], scatter.y[chosen], color=color, label=label, **style)
    else:
        for index, name in enumerate(series_names):
            chosen = scatter.series == index
            if chosen.any():
                ax.scatter(scatter.x[chosen], scatter.y[chosen], label=name,
                           color=SERIES_COLORS[index % len(SERIES_COLORS)], **style)
    ax.set_xlabel(x_label)
    ax.set_ylabel("std over passes")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, markerscale=3, frameon=False)
    sampled = f" (random sample of {scatter.rows_shown:,} of {scatter.rows_total:,} images)" \
        if scatter.sampled else f" ({scatter.rows_total:,} images)"
    ax.set_title("std vs mean" + sampled, fontsize=10)
    return figure


def reliability_figure(calibration: Calibration) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, counts below."""
    figure = _figure(6.0, 5.4)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    edges, counts = calibration.edges, calibration.counts
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    filled = counts > 0
    top.bar(centres[filled], calibration.accuracy[filled], width=width * 0.95, color="#4C72B0",
            label="accuracy")
    top.plot(centres[filled], calibration.confidence[filled], linestyle="none", marker="o",
             markersize=5, color="#C44E52", label="mean confidence")
    top.plot([0, 1], [0, 1], color="#333333", linestyle="--", linewidth=1, label="perfect")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(fontsize=8, frameon=False, loc="upper left")
    top.set_title(f"reliability, {len(counts)} equal-width bins, ECE {calibration.ece:.4f}",
                  fontsize=10)
    bottom.bar(centres, counts, width=width * 0.95, color="#777777")
    bottom.set_ylabel("images", fontsize=8)
    bottom.set_xlabel("confidence (top-label mean probability)")
    bottom.set_xlim(0, 1)
    return figure


def rejection_figure(selective: Mapping[str, Selective], oracle: tuple[np.ndarray, np.ndarray],
                     accuracy: float) -> Figure:
    """Accuracy among the kept images vs the share rejected, one curve per measure."""
    figure = _figure(7.0, 4.6)
    ax = figure.subplots()
    for index, (name, curve) in enumerate(selective.items()):
        style = {"linestyle": "--", "color": "#333333"} if name == "max_probability" else {
            "color": SERIES_COLORS[index % len(SERIES_COLORS)]}
        aurc = "" if curve.aurc is None else f" (AURC {curve.aurc:.4f})"
        ax.plot(1 - curve.coverage, curve.accuracy, label=MEASURE_TITLES.get(name, name) + aurc,
                linewidth=1.5, **style)
    ax.plot(1 - oracle[0], oracle[1], color="#999999", linestyle=":", label="oracle")
    ax.axhline(accuracy, color="#BBBBBB", linewidth=1, label="no rejection")
    ax.set_xlabel("share of images rejected (most uncertain first)")
    ax.set_ylabel("accuracy of the kept images")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_title("accuracy-rejection curves", fontsize=10)
    return figure
