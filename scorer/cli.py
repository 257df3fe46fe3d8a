"""``mcd-score``: a thin Click adapter over :mod:`scorer.scoring`, :mod:`scorer.compare` and friends.

``mcd-score IMAGES OUT.h5 ...`` scores (the default command, also spelled ``mcd-score score``);
``compare``, ``table`` and ``report`` are subcommands.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from scorer import __version__
from scorer.decode import DEFAULT_MAX_IMAGE_MB, DEFAULT_MAX_PIXELS
from scorer.errors import OutputWriteError, ScoreInterrupted, ScorerError, ScorerUsageError
from scorer.inputs import DEFAULT_MAX_FILE_MB
from scorer.report.command import report_command

EXIT_SOME_FAILED = 3
EXIT_WRITE_FAILED = 4
EXIT_INTERRUPTED = 130
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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
        """Library errors become usage errors (exit 2) or failures (exit 1)."""
        try:
            return super().invoke(ctx)
        except ScorerUsageError as error:
            raise click.UsageError(str(error), ctx) from error
        except ScorerError as error:
            raise click.ClickException(str(error)) from error

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

    Exit codes: 0 all images scored, 1 failure, 2 usage error, 3 finished but some images
    failed (their rows say why), 4 the output could not be written (disk full; resume with
    --resume once fixed), 130 interrupted (resume with --resume).
    """


@main.command("score", context_settings=CONTEXT)
@click.argument("images", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), envvar="MCD_SCORE_MODEL", required=True,
              help="The .onnx file written by mcd-export. [env: MCD_SCORE_MODEL]")
@click.option("--passes", type=click.IntRange(min=1), default=50, show_default=True,
              help="Stochastic passes T per image.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the dropout masks; the same seed gives the same numbers.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per ONNX Runtime call. [default: from --max-memory]")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="auto: CUDA when usable, else CPU (quietly; the summary says which ran).")
@click.option("--save-passes", is_flag=True, help="Also write the per-pass outputs [image, pass, class].")
@click.option("--overwrite", is_flag=True, help="Start afresh; OUT is replaced when the run completes.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (kept in OUT.parts/).")
@click.option("--files-from", type=click.File("rb"),
              help="Score the paths listed in this file ('-' for stdin), relative to IMAGES.")
@click.option("--allow-outside", is_flag=True,
              help="Let --files-from name files outside IMAGES (refused by default).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Image decoding processes (threads with --decode-threads; 0: decode in the "
                   "scoring thread). [default: CPUs, at most 8]")
@click.option("--decode-processes/--decode-threads", default=None,
              help="Decode in worker processes (rows in shared memory; where the OS allows) or "
                   "in threads. [default: processes from 2,048 images on, threads below]")
@click.option("--decoder", type=click.Choice(["auto", "pillow"]), default="auto", show_default=True,
              help="auto: libjpeg-turbo for plain JPEGs (the same pixels as Pillow, faster), Pillow "
                   "for the rest; pillow: Pillow for every file.")
@click.option("--max-memory", "max_memory_mb", type=click.IntRange(min=16), default=2048,
              show_default=True, help="Working-memory budget in MB for one ONNX call; sets how many "
              "passes run at once and the default batch size.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Images with more pixels are refused (decompression bombs).")
@click.option("--max-file-size", "max_file_mb", type=click.IntRange(min=1), default=DEFAULT_MAX_FILE_MB,
              show_default=True, help="Files larger than this many MB are refused unread.")
@click.option("--max-image-memory", "max_image_mb", type=click.IntRange(min=1),
              default=DEFAULT_MAX_IMAGE_MB, show_default=True,
              help="Images whose decoding would take more MB than this are refused.")
@click.option("--no-draft", is_flag=True, help="Always decode JPEGs at full size before resizing.")
@click.option("--commit-every", "commit_seconds", type=click.FloatRange(min=0, min_open=True),
              default=5.0, show_default=True, help="Seconds scored rows may wait in memory before "
              "they are committed to disk: at most what a kill -9 or power loss costs.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None,
              metavar="[auto|local|ADDRESS]", help="Score on a Ray cluster: auto (the running "
              "one, else a new local one), local (a new local one) or a cluster address.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="With --ray: actors. [default: the cluster's CPUs / --ray-cpus-per-worker]")
@click.option("--ray-cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="With --ray: CPUs per actor (its ONNX Runtime threads).")
@click.option("--ray-gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --ray: GPUs per actor.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="With --ray: images per shard. [default: about 4 shards per worker, 256..8192]")
@click.option("--consolidate", is_flag=True,
              help="With --ray: copy the parts into one plain OUT (default: stitch them; the "
                   "parts stay in OUT.parts/).")
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary (errors still shown).")
@click.option("--json-summary", is_flag=True, help="Print the final summary as JSON on stdout.")
def score_command(images: Path, out: Path, model: Path, passes: int, seed: int,
                  batch_size: int | None, device: str, save_passes: bool, overwrite: bool,
                  resume: bool, files_from, allow_outside: bool, workers: int | None,
                  decode_processes: bool | None, decoder: str, max_memory_mb: int, max_pixels: int,
                  max_file_mb: int, max_image_mb: int, no_draft: bool, commit_seconds: float,
                  ray_address: str | None, ray_workers: int | None, ray_cpus_per_worker: float,
                  ray_gpus_per_worker: float, shard_size: int | None, consolidate: bool, quiet: bool,
                  json_summary: bool) -> None:
    """Score every image under IMAGES with MC dropout and write the uncertainty to OUT.h5.

    Images in sub-folders of IMAGES get the sub-folder's name as their label (IMAGES/cat/x.jpg
    is a 'cat'), as in Keras' image_dataset_from_directory.
    """
    from scorer.inputs import read_file_list
    from scorer.progress import Reporter
    from scorer.scoring import ScoreOptions, score

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    options = ScoreOptions(
        passes=passes, seed=seed, batch_size=batch_size, device=device, save_passes=save_passes,
        mode="overwrite" if overwrite else "resume" if resume else "new", workers=workers,
        decode_processes=decode_processes, decoder=decoder,
        max_memory_mb=max_memory_mb, max_pixels=max_pixels, max_file_mb=max_file_mb,
        max_image_mb=max_image_mb, draft=not no_draft, commit_seconds=commit_seconds,
        command=shlex.join(["mcd-score", *sys.argv[1:]]),
    )
    reporter = Reporter(quiet)

    def announce(started) -> None:
        reporter.start_at(started.resumed)
        if quiet:
            return
        for warning in started.warnings:
            click.echo(f"mcd-score: note: {warning}", err=True)
        run_plan, split = started.plan, ""
        if run_plan.call_images < run_plan.batch_size:
            split = f" in calls of {run_plan.call_images} images (--max-memory)"
        resumed = f", {started.resumed} done before" if started.resumed else ""
        click.echo(f"mcd-score: {started.images} images{resumed}; {started.session.notice}, "
                   f"{passes} passes, batch {run_plan.batch_size}{split}, {run_plan.pass_chunk} "
                   "passes per call", err=True)

    try:
        source = images if files_from is None else read_file_list(files_from, images, allow_outside)
        if ray_address is None:
            summary = score(source, out, model, options, progress=reporter, on_start=announce)
        else:
            from scorer.distributed.driver import RayOptions, score_on_ray

            ray_options = RayOptions(ray_address, ray_workers, ray_cpus_per_worker,
                                     ray_gpus_per_worker, shard_size, consolidate=consolidate)
            summary = score_on_ray(source, out, model, options, ray_options, progress=reporter,
                                   on_start=announce)
    except ScoreInterrupted as error:
        reporter.close()
        click.echo(f"mcd-score: {error}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except OutputWriteError as error:
        reporter.close()
        click.echo(f"Error: {error}", err=True)
        sys.exit(EXIT_WRITE_FAILED)
    finally:
        reporter.close()
    if json_summary:
        click.echo(json.dumps(summary.to_dict(), sort_keys=True))
    elif not quiet:
        failures = ", ".join(f"{n} {reason}" for reason, n in sorted(summary.failures.items()))
        click.echo(f"wrote {out}: {summary.images} images ({summary.resumed} resumed), "
                   f"{summary.failed} failed{f' ({failures})' if failures else ''}, "
                   f"{summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s "
                   f"on {summary.provider.replace('ExecutionProvider', '')}", err=True)
    if summary.failed:
        sys.exit(EXIT_SOME_FAILED)


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
    from scorer.compare import compare_results, format_comparison

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
    from scorer.table import TableQuery, write_table

    query = TableQuery(where=conditions, sort=sort_by, ascending=ascending, top=top,
                       columns=tuple(columns.split(",")) if columns else None)
    write_table(results, query, csv=csv_path or (None if parquet_path else "-"),
                parquet=parquet_path, stdout=click.get_binary_stream("stdout"))


main.add_command(report_command)
