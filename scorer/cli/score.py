"""``mcd-score score`` (the default command): options in, :func:`scorer.scoring.score` called.

The summary line, progress and the exit code 3 (some images failed) are this command's; every
library error is mapped by the group (:func:`scorer.cli.errors.library_errors`).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from scorer.cli import CONTEXT
from scorer.images.decode import DEFAULT_MAX_IMAGE_MB, DEFAULT_MAX_PIXELS
from scorer.images.files import DEFAULT_MAX_FILE_MB

EXIT_SOME_FAILED = 3



@click.command("score", context_settings=CONTEXT)
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
              help="auto: CUDA when usable, else CPU (quietly; the summary says which ran; "
                   "MCD_SCORE_DEVICE=cpu|cuda decides for auto).")
@click.option("--tf32", is_flag=True,
              help="CUDA: allow TF32 math (faster on Ampere and newer GPUs, but about 1e-3 "
                   "relative rounding: numbers differ from the CPU's and predicted classes may "
                   "flip on near ties). [default: off]")
@click.option("--save-passes", is_flag=True, help="Also write the per-pass outputs [image, pass, class].")
@click.option("--overwrite", is_flag=True, help="Start afresh; OUT is replaced when the run completes.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (kept in OUT.parts/).")
@click.option("--files-from", type=click.File("rb"),
              help="Score the paths listed in this file ('-' for stdin), relative to IMAGES.")
@click.option("--allow-outside", is_flag=True,
              help="Let --files-from name files outside IMAGES (refused by default).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Image decoding processes (threads with --decode-threads; 0: decode in the "
                   "scoring thread). [default: the CPUs this process may use]")
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
@click.option("--ray-restart-wait", type=click.FloatRange(min=0, min_open=True),
              default=300.0, show_default=True, help="With --ray: seconds an actor may take to "
              "start or come back after it died before it is given up.")
@click.option("--consolidate", is_flag=True,
              help="With --ray: copy the parts into one plain OUT (default: stitch them; the "
                   "parts stay in OUT.parts/).")
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary (errors still shown).")
@click.option("--json-summary", is_flag=True, help="Print the final summary as JSON on stdout.")
def score_command(images: Path, out: Path, model: Path, passes: int, seed: int,
                  batch_size: int | None, device: str, tf32: bool, save_passes: bool,
                  overwrite: bool,
                  resume: bool, files_from, allow_outside: bool, workers: int | None,
                  decode_processes: bool | None, decoder: str, max_memory_mb: int, max_pixels: int,
                  max_file_mb: int, max_image_mb: int, no_draft: bool, commit_seconds: float,
                  ray_address: str | None, ray_workers: int | None, ray_cpus_per_worker: float,
                  ray_gpus_per_worker: float, shard_size: int | None, ray_restart_wait: float,
                  consolidate: bool, quiet: bool,
                  json_summary: bool) -> None:
    """Score every image under IMAGES with MC dropout and write the uncertainty to OUT.h5.

    Images in sub-folders of IMAGES get the sub-folder's name as their label (IMAGES/cat/x.jpg
    is a 'cat'), as in Keras' image_dataset_from_directory.
    """
    from scorer.cli.progress import Reporter
    from scorer.images.listing import read_file_list
    from scorer.scoring import ScoreOptions, score

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    options = ScoreOptions(
        passes=passes, seed=seed, batch_size=batch_size, device=device, tf32=tf32,
        save_passes=save_passes,
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
        click.echo(f"mcd-score: {started.images} images{resumed}; {started.where}, "
                   f"{passes} passes, batch {run_plan.batch_size}{split}, {run_plan.pass_chunk} "
                   "passes per call", err=True)

    try:
        source = images if files_from is None else read_file_list(files_from, images, allow_outside)
        if ray_address is None:
            summary = score(source, out, model, options, progress=reporter, on_start=announce)
        else:
            from scorer.distributed.driver import RayOptions, score_on_ray

            ray_options = RayOptions(ray_address, ray_workers, ray_cpus_per_worker,
                                     ray_gpus_per_worker, shard_size,
                                     restart_wait=ray_restart_wait, consolidate=consolidate)
            summary = score_on_ray(source, out, model, options, ray_options, progress=reporter,
                                   on_start=announce)
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
