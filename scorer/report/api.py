"""The report's library entry point: results file in, HTML page and JSON summary out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scorer.atomic import atomic_write
from scorer.report import figures as draw
from scorer.report import page, plots, thumbs
from scorer.report.analysis import MEASURE_TITLES, Analysis, analyse
from scorer.report.columns import read_table
from scorer.report.errors import ReportUsageError
from scorer.report.load import ResultsReader
from scorer.report.options import ReportOptions, ReportSummary


def default_html_path(results_path: Path) -> Path:
    """``OUT.h5`` -> ``OUT.html`` beside it."""
    return Path(results_path).with_suffix(".html")


def write_report(results_path: Path, html_path: Path | None,
                 options: ReportOptions | None = None) -> ReportSummary:
    """Read a results file and write its report.

    Args:
        results_path: The HDF5 file written by ``mcd-score``.
        html_path: Where to write the page (``None``: :func:`default_html_path`); ignored when
            ``options.write_html`` is false.
        options: What to compute and where to write the JSON summary.

    Returns:
        The numbers (the JSON summary), the files written and warnings for the user.

    Raises:
        ResultsFileError: The results file is missing or not an mcd-score results file.
        MissingDependencyError: The page was asked for and matplotlib is not installed.
        ReportUsageError: An output file cannot be written.
    """
    options = options or ReportOptions()
    if options.write_html:
        draw.require_matplotlib()
        html_path = Path(html_path) if html_path is not None else default_html_path(results_path)
    with ResultsReader(Path(results_path)) as reader:
        table = read_table(reader, options.ood_labels, options.max_points, options.seed)
        analysis = analyse(table, options)
        numbers = analysis.to_json()
        summary = ReportSummary(numbers, warnings=_warnings(analysis))
        if options.write_html:
            folder = thumbs.images_folder(table, options.images)
            most, least = thumbs.extreme_rows(table, options.thumbnails)
            if folder is None and most:
                summary.warnings.append("images folder not found, the page shows no thumbnails; "
                                        "give it with --images")
            galleries = {"most": thumbs.gallery(reader, table, most, folder),
                         "least": thumbs.gallery(reader, table, least, folder)}
            examples = thumbs.failure_examples(reader, table)
            html = page.render(analysis, numbers, render_figures(analysis), galleries, examples)
            summary.html_path = _write_text(html_path, html)
    if options.json_summary is not None:
        summary.json_path = _write_text(Path(options.json_summary), summary_text(numbers))
    return summary


def summary_text(numbers: dict[str, Any]) -> str:
    """The JSON summary as text (strict JSON: no NaN)."""
    return json.dumps(numbers, indent=2, allow_nan=False) + "\n"


def _warnings(analysis: Analysis) -> list[str]:
    warnings = [f"--ood {label!r} matches no image label" for label in analysis.missing_ood_labels]
    names = analysis.table.info.class_names
    warnings += [f"--ood {label!r} is also a class name: its images count as out-of-distribution"
                 for label in analysis.options.ood_labels if label in names]
    if analysis.table.info.rows and not analysis.table.ok.any():
        warnings.append("no image of the file was scored: the report lists the failures only")
    return warnings


def render_figures(analysis: Analysis) -> dict[str, list[tuple[str, bytes]]]:
    """PNG panels of every figure that applies, by name: ``distributions``, ``correct_wrong`` and
    ``ood`` (one panel per measure), ``scatter``, ``reliability`` and ``rejection`` (one each),
    each drawn by the function of :mod:`scorer.report.plots` a notebook calls."""
    result: dict[str, list[tuple[str, bytes]]] = {}

    def histograms(names, groups: tuple[str, ...]) -> list[tuple[str, bytes]]:
        return [(MEASURE_TITLES.get(name, name), draw.png(plots.histogram(analysis, name, groups)))
                for name in names]

    if analysis.histograms:
        result["distributions"] = histograms(analysis.histograms, ("all",))
    if analysis.correct is not None:
        result["correct_wrong"] = histograms(analysis.histograms, ("correct", "wrong"))
    scatter = analysis.table.scatter
    if scatter is not None and scatter.x.size:
        result["scatter"] = [("std against mean", draw.png(plots.std_vs_probability(analysis)))]
    if analysis.calibration is not None:
        result["reliability"] = [("reliability diagram", draw.png(plots.reliability(analysis)))]
        result["rejection"] = [("accuracy-rejection curves",
                                draw.png(plots.rejection(analysis)))]
    if analysis.ood:
        result["ood"] = histograms([name for name, o in analysis.ood.items() if o.histogram],
                                   ("in-distribution", "OOD"))
    return result


def _write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`scorer.atomic.atomic_write`)."""
    try:
        atomic_write(path, text.encode("utf-8"))
    except OSError as err:
        raise ReportUsageError(f"cannot write {path}: {err.strerror or err}; check that its folder "
                               "exists and is writable") from err
    return path
