"""``mcd-score report``: a thin Click adapter over :func:`scorer.report.write_report`.

Library errors are mapped by the ``mcd-score`` group (:func:`scorer.cli.errors.library_errors`).
"""

from __future__ import annotations

from pathlib import Path

import click

from scorer.cli import CONTEXT


@click.command("report", context_settings=CONTEXT)
@click.argument("results", type=click.Path(path_type=Path))
@click.argument("html", type=click.Path(path_type=Path), required=False)
@click.option("--json-summary", "json_summary", type=click.Path(path_type=Path, allow_dash=True),
              help="Also write every number as JSON to this file ('-' for stdout).")
@click.option("--ood", "ood_labels", multiple=True, metavar="LABEL",
              help="A label (class folder) of out-of-distribution images; repeatable.")
@click.option("--images", type=click.Path(path_type=Path),
              help="Folder the image paths are relative to, if moved since scoring. "
                   "[default: the folder that was scored]")
@click.option("--flag-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.1, show_default=True,
              help="Share of the most uncertain images flagged in the flagged-vs-rest table.")
@click.option("--max-points", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Most images drawn in a scatter plot; more are sampled (the page says so).")
@click.option("--no-html", is_flag=True, help="Write only the JSON summary (no matplotlib needed).")
def report_command(results: Path, html: Path | None, json_summary: Path | None,
                   ood_labels: tuple[str, ...], images: Path | None, flag_fraction: float,
                   max_points: int, no_html: bool) -> None:
    """Write a self-contained HTML report of RESULTS.h5 to HTML (default: RESULTS.html).

    Shows uncertainty distributions, std vs mean, the most and least uncertain images and the
    failed ones; with class-folder labels also accuracy, NLL, Brier, ECE, reliability,
    accuracy-rejection curves and AURC; with --ood labels OOD detection (AUROC, AUPR, FPR@95%TPR).
    """
    from scorer.report import ReportOptions, write_report
    from scorer.report.api import summary_text

    if no_html and json_summary is None:
        raise click.UsageError("--no-html writes nothing without --json-summary FILE")
    to_stdout = json_summary is not None and str(json_summary) == "-"
    options = ReportOptions(ood_labels=tuple(ood_labels), images=images,
                            json_summary=None if to_stdout else json_summary, write_html=not no_html,
                            flag_fraction=flag_fraction, max_points=max_points)
    summary = write_report(results, html, options)
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    if to_stdout:
        click.echo(summary_text(summary.numbers), nl=False)
    if summary.html_path is not None:
        click.echo(f"wrote {summary.html_path}", err=to_stdout)
    if summary.json_path is not None:
        click.echo(f"wrote {summary.json_path}", err=to_stdout)
