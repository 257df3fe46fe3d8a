"""``mcd-score``: the command group, a thin Click adapter over the library.

``mcd-score IMAGES OUT.h5 ...`` scores (the default command, also spelled ``mcd-score score``,
:mod:`scorer.cli.score`); ``compare``, ``table`` and ``report`` are subcommands. Every command's
library errors become exit codes through :func:`scorer.cli.errors.library_errors`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from scorer import __version__
from scorer.cli import CONTEXT
from scorer.cli.doctor import doctor_command
from scorer.cli.errors import library_errors
from scorer.cli.report import report_command
from scorer.cli.score import score_command


class DefaultToScore(click.Group):
    """A group whose default command is ``score``, and whose help shows the scoring options.

    ``mcd-score images/ out.h5`` needs no verb. A folder named like a subcommand (``compare``)
    is scored with ``mcd-score score compare out.h5`` or ``mcd-score ./compare out.h5``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["score", *args]
        elif args and args[0] in self.commands and args[0] != "score" and os.path.isdir(args[0]):
            click.echo(f"mcd-score: note: {args[0]!r} is taken as the {args[0]} command; to score "
                       f"the folder of that name, write: mcd-score ./{args[0]} ...", err=True)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        """Library errors become usage errors (exit 2) or failures (their exit code)."""
        with library_errors():
            return super().invoke(ctx)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_options(ctx, formatter)
        score = self.commands["score"]
        records = [p.get_help_record(ctx) for p in score.get_params(ctx)]
        with formatter.section("Scoring options (mcd-score IMAGES OUT.h5 ...)"):
            formatter.write_dl([r for r in records if r is not None])


@click.group(cls=DefaultToScore, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="mcd-score")
def main() -> None:
    """Monte Carlo dropout uncertainty for every image of a folder, written to HDF5.

    \b
    mcd-score IMAGES OUT.h5 --model MODEL.onnx   score a folder (same as: mcd-score score ...)
    mcd-score compare REF.h5 NEW.h5              compare two result files
    mcd-score table OUT.h5 --csv -               the results as a table (CSV, Parquet)
    mcd-score report OUT.h5 REPORT.html          figures and numbers in one HTML page
    mcd-score doctor [--model MODEL.onnx]        what this machine can run, and why

    Exit codes: 0 all images scored, 1 failure, 2 usage error, 3 finished but some images
    failed (their rows say why), 4 the output could not be written (disk full; resume with
    --resume once fixed), 130 interrupted (resume with --resume).
    """


@main.command("compare", context_settings=CONTEXT)
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--atol", type=float, default=1e-6, show_default=True, help="Absolute tolerance.")
@click.option("--rtol", type=float, default=1e-5, show_default=True, help="Relative tolerance.")
@click.option("--worst", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many of the most different images to list per metric.")
def compare_command(reference: Path, new: Path, atol: float, rtol: float, worst: int) -> None:
    """Compare NEW.h5 against REFERENCE.h5 row by row (matched by path).

    Exit code 0 when every metric is within |new - ref| <= atol + rtol * |ref| and NEW has
    every dataset REFERENCE has, 1 otherwise.
    """
    from scorer.results.compare import compare_results, format_comparison

    result = compare_results(reference, new, atol=atol, rtol=rtol, worst=worst)
    click.echo(format_comparison(result))
    if not result.ok:
        sys.exit(1)


@main.command("table", context_settings=CONTEXT)
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", metavar="FILE|-", help="Write CSV here ('-': stdout, the default).")
@click.option("--parquet", "parquet_path", type=click.Path(path_type=Path),
              help="Write Parquet here (needs pyarrow).")
@click.option("--where", "conditions", multiple=True, metavar="COL=VALUE",
              help="Keep rows where COL=VALUE (also !=, <, <=, >, >=); repeat to combine.")
@click.option("--sort", "sort_by", metavar="COLUMN", help="Sort by this column, largest first.")
@click.option("--ascending", is_flag=True, help="With --sort: smallest first.")
@click.option("--top", type=click.IntRange(min=1), help="Keep only the first N rows (after --sort).")
@click.option("--columns", metavar="A,B,...", help="Only these columns. [default: all]")
def table_command(results: Path, csv_path: str | None, parquet_path: Path | None,
                  conditions: tuple[str, ...], sort_by: str | None, ascending: bool,
                  top: int | None, columns: str | None) -> None:
    """The results of OUT.h5 as a table: one row per image, one column per metric and class."""
    from scorer.results.table import TableQuery, write_table

    query = TableQuery(where=conditions, sort=sort_by, ascending=ascending, top=top,
                       columns=tuple(columns.split(",")) if columns else None)
    write_table(results, query, csv=csv_path or (None if parquet_path else "-"),
                parquet=parquet_path, stdout=click.get_binary_stream("stdout"))


main.add_command(score_command)
main.add_command(report_command)
main.add_command(doctor_command)
