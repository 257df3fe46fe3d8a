"""``mcd-score doctor``: a thin Click adapter over :func:`scorer.doctor.diagnose`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from scorer.cli import CONTEXT


@click.command("doctor", context_settings=CONTEXT)
@click.option("--model", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Also check this mcd-export graph: each device, every node on CUDA, the plan.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True, help="The device whose use decides the exit code.")
@click.option("--passes", type=click.IntRange(min=1), default=50, show_default=True,
              help="Passes the plan is made for (with --model).")
@click.option("--max-memory", "max_memory_mb", type=click.IntRange(min=16), default=2048,
              show_default=True, help="Memory budget the plan is made for, as mcd-score's.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (stable keys).")
def doctor_command(model: Path | None, device: str, passes: int, max_memory_mb: int,
                   as_json: bool) -> None:
    """Say what this machine can run and why: versions, providers, CUDA's libraries and driver,
    a self-test on every usable device, and with --model the same for your graph.

    Exit code 0 when the requested device works, 1 when it does not.
    """
    from scorer.doctor import diagnose, lines

    report = diagnose(model, device, max_memory_mb, passes)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        for line in lines(report):
            click.echo(line)
    sys.exit(0 if report["ok"] else 1)
