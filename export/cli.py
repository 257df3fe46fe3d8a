"""``mcd-export MODEL OUT.onnx``: a thin Click adapter over :func:`export.api.export_file`."""

from __future__ import annotations

from pathlib import Path

import click

from export.errors import ExportError, ExportUsageError
from export.options import HEADS, PRESETS
from scorer.cli.errors import library_errors
from scorer.contract import LAYOUTS, RESIZE_METHODS


def _size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 224x224, got {value!r}") from None
    if height < 1 or width < 1:
        raise click.BadParameter(f"size must be positive, got {value!r}")
    return height, width


def _floats(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _patterns(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    if not patterns:
        raise click.BadParameter("give at least one layer name or glob, e.g. --mc-layers 'top_*'")
    return patterns


def _class_names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return tuple(name for name in names if name)
    return tuple(name.strip() for name in value.split(","))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcd-score", prog_name="mcd-export")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--unsafe", is_flag=True,
              help="Keras: allow Lambda layers and custom code (safe mode off). Trusted files only.")
@click.option("--strict", is_flag=True,
              help="Keras: fail instead of warning when a layer's internal dropout cannot be "
                   "reproduced.")
@click.option("--head", type=click.Choice(HEADS),
              help="ONNX: how to read an output that ends in logits (softmax, sigmoid or "
                   "multilabel are appended; linear reads values). [default: from the last op]")
@click.option("--layout", type=click.Choice(LAYOUTS),
              help="ONNX: where the channels are, when the input shape does not tell. "
                   "[default: from the input shape]")
@click.option("--preprocessing", "preset", type=click.Choice(sorted(PRESETS)),
              help="Scale, mean and std of a known family: torchvision = 1/255, then ImageNet's "
                   "mean and std.")
@click.option("--input-size", metavar="HxW",
              help="Image size for models whose input size is not fixed, or flat-vector models.")
@click.option("--output", "output_name", metavar="NAME", help="Which output, for multi-output models.")
@click.option("--color", type=click.Choice(["rgb", "grayscale"]),
              help="Colour mode fed to the model. [default: from the input's channels]")
@click.option("--scale", type=float, default=None,
              show_default="1/255, or 1 when the model rescales its input itself",
              help="Pixel values 0..255 are multiplied by this ...")
@click.option("--offset", type=float, default=0.0, show_default=True, help="... then this is added.")
@click.option("--mean", metavar="M[,M,M]", help="Then per-channel mean subtracted ...")
@click.option("--std", metavar="S[,S,S]", help="... and divided by the per-channel std.")
@click.option("--resize", "resize_method", type=click.Choice(RESIZE_METHODS), default="bilinear",
              show_default=True, help="Resampling filter used to reach the input size.")
@click.option("--class-names", metavar="A,B,C|FILE",
              help="Class names, comma-separated or a file with one per line.")
@click.option("--trunk", type=click.Choice(["cached", "input"]), default="cached", show_default=True,
              help="cached: run the part before the first dropout once per image; "
                   "input: run the whole network every pass.")
@click.option("--mc-layers", metavar="NAME[,NAME...]",
              help="Sample only these dropout layers (names or paths, globs like 'top_*'); the "
                   "others act as in inference. [default: every dropout layer]")
@click.option("--max-memory", type=click.IntRange(min=64), default=2048, show_default=True,
              metavar="MB", help="Working memory per validation call (as mcd-score's --max-memory).")
@click.option("--no-validate", is_flag=True,
              help="Skip the checks against the source model (not recommended).")
@click.option("--validation-passes", type=click.IntRange(min=10), default=200, show_default=True,
              help="Passes for the statistical check against the source's own MC dropout.")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Absolute and relative tolerance of the exact checks against the source model. "
                   "[default: 16 x the graph's measured float32 noise floor, at least 1e-5]")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def main(model: Path, out: Path, unsafe: bool, strict: bool, head: str | None,
         layout: str | None, preset: str | None, input_size: str | None,
         output_name: str | None, color: str | None, scale: float | None, offset: float,
         mean: str | None, std: str | None, resize_method: str, class_names: str | None,
         trunk: str, mc_layers: str | None, max_memory: int, no_validate: bool,
         validation_passes: int, tolerance: float | None, quiet: bool) -> None:
    """Export MODEL to OUT.onnx, a self-contained MC dropout graph.

    MODEL is a Keras model (.keras or .h5) or an ONNX graph (.onnx, e.g. from PyTorch) whose
    dropout is exported as Dropout nodes in training mode. The graph generates its dropout masks
    from a seed, takes the number of passes at run time, and carries its preprocessing and class
    names as metadata for mcd-score.
    """
    from export.api import ExportOptions, export_file

    # TensorFlow, tf2onnx and ONNX raise many types: any other error is reported in one line
    with library_errors((ExportUsageError,), (ExportError,), unexpected=lambda error: (
            f"exporting {model} failed unexpectedly: {type(error).__name__}: {error}")):
        options = ExportOptions(
            unsafe=unsafe, strict=strict, input_size=_size(input_size), output=output_name,
            color_mode=color, scale=scale, offset=offset, mean=_floats(mean), std=_floats(std),
            resize_method=resize_method, class_names=_class_names(class_names), trunk=trunk,
            mc_layers=_patterns(mc_layers), max_memory=max_memory, validate=not no_validate,
            validation_passes=validation_passes, tolerance=tolerance, head=head, layout=layout,
            preprocessing=preset,
        )
        result = export_file(model, out, options)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if quiet:
        return
    meta = result.metadata
    click.echo(f"wrote {out}: {meta.num_outputs} {meta.output_kind} from {meta.head} head, "
               f"input {meta.preprocessing.height}x{meta.preprocessing.width} "
               f"{meta.preprocessing.color_mode}, trunk {meta.trunk}")
    for line in result.notes:
        click.echo(line)
    for line in result.report:
        click.echo(f"validated: {line}")
