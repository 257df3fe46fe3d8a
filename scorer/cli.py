"""``mcd-score``: a thin Click adapter over :func:`scorer.score.score` and :mod:`scorer.compare`.

``mcd-score IMAGES OUT.h5 ...`` scores (the default command); ``mcd-score compare REF NEW`` compares.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click

from scorer.errors import ScorerError, ScorerUsageError

EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130
LOG_EVERY_SECONDS = 30.0


class DefaultToScore(click.Group):
    """A group whose default command is ``score``: ``mcd-score images/ out.h5`` needs no verb."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["score", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultToScore, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Monte Carlo dropout uncertainty for every image of a folder, written to HDF5.

    \b
    mcd-score IMAGES OUT.h5 --model MODEL.onnx   score a folder (the default command)
    mcd-score compare REF.h5 NEW.h5              compare two result files
    """


class Reporter:
    """Progress on a terminal as a bar, elsewhere as a plain line every 30 seconds."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.terminal = sys.stderr.isatty()
        self.bar = None
        self.last_log = time.monotonic()
        self.started = time.monotonic()
        self.done = 0

    def __call__(self, done: int, total: int, failed: int) -> None:
        if self.quiet:
            return
        if self.terminal:
            if self.bar is None:
                self.bar = click.progressbar(length=total, label="scoring", file=sys.stderr,
                                             show_pos=True, show_eta=True)
                self.bar.__enter__()
            self.bar.update(done - self.done)
        elif time.monotonic() - self.last_log >= LOG_EVERY_SECONDS or done == total:
            rate = done / max(time.monotonic() - self.started, 1e-9)
            click.echo(f"scored {done}/{total} images ({100 * done / total:.1f}%), {failed} failed, "
                       f"{rate:.1f} images/s", err=True)
            self.last_log = time.monotonic()
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@main.command("score")
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
              help="auto: CUDA when usable, else CPU.")
@click.option("--save-passes", is_flag=True, help="Also write the per-pass outputs [N, T, C].")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.partial.")
@click.option("--files-from", type=click.File("r", encoding="utf-8"),
              help="Score the paths listed in this file ('-' for stdin), relative to IMAGES.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Image decoding threads. [default: CPUs, at most 8]")
@click.option("--max-memory", "max_memory_mb", type=click.IntRange(min=16), default=2048,
              show_default=True, help="Working-memory budget in MB for one ONNX call; sets how many "
              "passes run at once and the default batch size.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=89_478_485, show_default=True,
              help="Larger images are refused as decompression bombs.")
@click.option("--no-draft", is_flag=True, help="Always decode JPEGs at full size before resizing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary (errors still shown).")
@click.option("--json-summary", is_flag=True, help="Print the final summary as JSON on stdout.")
def score_command(images: Path, out: Path, model: Path, passes: int, seed: int,
                  batch_size: int | None, device: str, save_passes: bool, overwrite: bool,
                  resume: bool, files_from, workers: int | None, max_memory_mb: int,
                  max_pixels: int, no_draft: bool, quiet: bool, json_summary: bool) -> None:
    """Score every image under IMAGES with MC dropout and write the uncertainty to OUT.h5.

    Exit codes: 0 all images scored, 1 failure, 2 usage error, 3 finished but some images
    could not be read (their rows have a failure status), 130 interrupted (resume with --resume).
    """
    from scorer.images import read_file_list
    from scorer.score import ScoreInterrupted, ScoreOptions, score

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    options = ScoreOptions(
        passes=passes, seed=seed, batch_size=batch_size, device=device, save_passes=save_passes,
        mode="overwrite" if overwrite else "resume" if resume else "new", workers=workers,
        max_memory_mb=max_memory_mb, max_pixels=max_pixels, draft=not no_draft,
        command=shlex.join(["mcd-score", *sys.argv[1:]]),
    )
    reporter = Reporter(quiet)

    def announce(session, run_plan) -> None:
        if not quiet:
            split = ""
            if run_plan.call_images < run_plan.batch_size:
                split = f" in calls of {run_plan.call_images} images (--max-memory)"
            click.echo(f"mcd-score: {session.notice}; {passes} passes, batch {run_plan.batch_size}"
                       f"{split}, {run_plan.pass_chunk} passes per call", err=True)

    try:
        source = images if files_from is None else read_file_list(files_from, images)
        summary = score(source, out, model, options, progress=reporter, on_session=announce)
    except ScoreInterrupted as error:
        reporter.close()
        click.echo(f"mcd-score: {error}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except ScorerUsageError as error:
        reporter.close()
        raise click.UsageError(str(error)) from error
    except ScorerError as error:
        reporter.close()
        raise click.ClickException(str(error)) from error
    reporter.close()
    if json_summary:
        click.echo(json.dumps(summary.to_dict(), sort_keys=True))
    elif not quiet:
        failures = ", ".join(f"{n} {reason}" for reason, n in sorted(summary.failures.items()))
        click.echo(f"wrote {out}: {summary.images} images ({summary.resumed} resumed), "
                   f"{summary.failed} failed{f' ({failures})' if failures else ''}, "
                   f"{summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s", err=True)
    if summary.failed:
        sys.exit(EXIT_SOME_FAILED)


@main.command("compare")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--atol", type=float, default=1e-6, show_default=True, help="Absolute tolerance.")
@click.option("--rtol", type=float, default=1e-5, show_default=True, help="Relative tolerance.")
@click.option("--worst", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many of the most different images to list per metric.")
def compare_command(reference: Path, new: Path, atol: float, rtol: float, worst: int) -> None:
    """Compare NEW.h5 against REFERENCE.h5 row by row (matched by path).

    Exit code 0 when every metric is within |new - ref| <= atol + rtol * |ref|, 1 otherwise.
    """
    from scorer.compare import compare_results, format_comparison

    try:
        result = compare_results(reference, new, atol=atol, rtol=rtol, worst=worst)
    except ScorerUsageError as error:
        raise click.UsageError(str(error)) from error
    except ScorerError as error:
        raise click.ClickException(str(error)) from error
    click.echo(format_comparison(result))
    if not result.ok:
        sys.exit(1)
