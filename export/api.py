"""Library entry point: Keras model file -> validated, self-contained MC dropout ONNX file.

load -> inspect -> convert (masks as inputs) -> validate conversion -> generate masks in-graph
(trunk caching) -> add per-pass output and statistics -> stamp metadata -> validate -> save atomically.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from export import convert, prune, reduce, stochastic, validate
from export.errors import ExportUsageError, UnsupportedModelError
from export.validate import ATOL as DEFAULT_TOLERANCE
from scorer.contract import ModelMetadata, Preprocessing

IR_VERSION = 8  # onnxruntime 1.31 reads IR <= 13; opset 17 needs IR >= 8
PROBE_TOP_TENSORS = 4


@dataclass(frozen=True)
class ExportOptions:
    """Options of :func:`export_model`; ``None`` means "derive from the model"."""

    unsafe: bool = False
    strict: bool = False
    input_size: tuple[int, int] | None = None
    output: str | None = None
    color_mode: str | None = None
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_method: str = "bilinear"
    class_names: tuple[str, ...] | None = None
    trunk: str = "cached"
    validate: bool = True
    validation_passes: int = 200
    validation_seed: int = 0
    tolerance: float = DEFAULT_TOLERANCE


@dataclass
class ExportResult:
    """What was written and what was checked."""

    path: Path | None
    metadata: ModelMetadata
    model: onnx.ModelProto
    warnings: list[str] = field(default_factory=list)
    report: list[str] = field(default_factory=list)


def export_file(source: Path, destination: Path, options: ExportOptions) -> ExportResult:
    """Export the Keras model file ``source`` to ``destination`` (written only if valid)."""
    check_destination(destination)
    model = convert.load_model(source, unsafe=options.unsafe)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    result = build(model, options, source_sha256=digest, source_name=source.name)
    save(result.model, destination)
    result.path = destination
    return result


def check_destination(destination: Path) -> None:
    parent = destination.parent if str(destination.parent) else Path(".")
    if destination.is_dir():
        raise ExportUsageError(f"destination {str(destination)!r} is a directory; give a file name")
    if not parent.is_dir():
        raise ExportUsageError(f"cannot write {str(destination)!r}: folder {str(parent)!r} "
                               "does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportUsageError(f"cannot write {str(destination)!r}: folder {str(parent)!r} "
                               "is not writable")


def build(model, options: ExportOptions, source_sha256: str = "",
          source_name: str = "") -> ExportResult:
    """Build (and by default validate) the MC dropout graph of an in-memory Keras model."""
    warnings = convert.unreproducible_layers(model)
    if warnings and options.strict:
        raise UnsupportedModelError(
            "these layers have internal dropout or noise that the exported graph cannot "
            f"reproduce: {'; '.join(warnings)} (drop --strict to export with a warning)"
        )
    shape = convert.single_input_shape(model, options.input_size)
    head = convert.find_head(model, options.output)
    sites = convert.probe_sites(model, shape)
    if not sites:
        raise UnsupportedModelError(
            "the model has no Dropout, SpatialDropout, GaussianDropout or AlphaDropout layer "
            "with a rate above 0: MC dropout would report zero uncertainty for every image. "
            "Add dropout before the classifier and retrain, or use a different method"
        )
    layout, preprocessing = default_preprocessing(shape, options)
    class_names = options.class_names
    kind, classes = reduce.output_kind(head.activation, head.width)
    if class_names is not None and len(class_names) != classes:
        raise ExportUsageError(
            f"{len(class_names)} class names given for a head with {classes} classes"
        )
    masked = convert.convert_masked(model, shape, sites, head)
    layer_ids = prune.used_sites(masked, sites)
    if not layer_ids:
        raise UnsupportedModelError(
            f"no dropout layer lies on the path to output {head.name!r}: MC dropout would report "
            "zero uncertainty for it. Choose an output after a dropout layer with --output"
        )
    if len(layer_ids) < len(sites):
        ignored = [sites[k].name for k in range(len(sites)) if k not in layer_ids]
        warnings.append(f"dropout layers not on the path to output {head.name!r} are ignored: "
                        f"{', '.join(ignored)}")
        masked, sites = prune.keep_sites(masked, sites, layer_ids)
    report = validate.Report()
    rng = np.random.default_rng(options.validation_seed)
    images = rng.random((4, *shape), dtype=np.float32)
    if options.validate:
        validate.check_conversion(masked, model, head, sites, images, report, options.tolerance)

    trunk = options.trunk
    ranks = None
    if trunk == "cached":
        frontier = stochastic.find_frontier(masked.graph, set(stochastic.mask_input_names(sites)),
                                            "cached")
        ranks = validate.frontier_ranks(masked, sites, frontier, shape)
        if ranks is None:
            warnings.append("could not cache the deterministic trunk (a tensor crossing into the "
                            "stochastic part has no batch axis); every pass runs the whole network")
            trunk = "input"
    graph = stochastic.make_stochastic(masked, sites, trunk, ranks)
    reduce.add_outputs(graph.model, graph.output, graph.pass_count_1d, head.activation,
                       head.width)
    final = graph.model
    final.ir_version = IR_VERSION
    final.producer_name = "mcd-export"
    onnx.checker.check_model(final)

    per_image, per_pass = memory_estimate(final, shape)
    metadata = ModelMetadata(
        input_shape=(None, *shape), layout=layout, preprocessing=preprocessing,
        output_kind=kind, head=head.activation, num_outputs=classes,
        dropout_sites=tuple(sites), class_names=class_names, source_sha256=source_sha256,
        source_name=source_name, versions=convert.versions(), opset=convert.OPSET,
        ir_version=IR_VERSION, trunk=trunk, bytes_per_image=per_image,
        bytes_per_image_pass=per_pass,
    )
    metadata.check()
    onnx.helper.set_model_props(final, metadata.to_props())
    if options.validate:
        validate.check_masks(final, model, head, sites, images, options.validation_seed, report,
                             tolerance=options.tolerance, layer_ids=layer_ids)
        validate.check_statistics(final, model, head, images, options.validation_seed,
                                  options.validation_passes, report)
    return ExportResult(None, metadata, final, warnings, report.lines)


def default_preprocessing(
    shape: tuple[int, ...], options: ExportOptions
) -> tuple[str, Preprocessing]:
    """``(layout, preprocessing)`` from the input shape, overridden by the options."""
    if len(shape) == 3:
        channels_first = shape[0] in (1, 3) and shape[-1] not in (1, 3)
        layout = "NCHW" if channels_first else "NHWC"
        channels = shape[0] if channels_first else shape[-1]
        height, width = (shape[1], shape[2]) if channels_first else (shape[0], shape[1])
    elif len(shape) in (1, 2):
        layout = "NHWC"
        height, width, channels = _flat_image_size(shape, options)
    else:
        raise UnsupportedModelError(
            f"input shape {shape} is not an image: expected (height, width, channels), "
            "(channels, height, width), (height, width) or a flat vector"
        )
    if channels not in (1, 3):
        raise UnsupportedModelError(
            f"the model expects {channels} channels; mcd-score feeds grayscale (1) or RGB (3)"
        )
    color = options.color_mode or ("grayscale" if channels == 1 else "rgb")
    if (color == "grayscale") != (channels == 1):
        raise ExportUsageError(
            f"--color {color} gives {3 if channels == 1 else 1} channels but the model "
            f"expects {channels}"
        )
    if options.input_size is not None and options.input_size != (height, width):
        raise ExportUsageError(
            f"--input-size {options.input_size[0]}x{options.input_size[1]} does not match the "
            f"model's fixed input size {height}x{width}"
        )
    pre = Preprocessing(height=height, width=width, color_mode=color, scale=options.scale,
                        offset=options.offset, mean=options.mean, std=options.std,
                        resize_method=options.resize_method)
    try:
        pre.check()
    except ValueError as error:
        raise ExportUsageError(str(error)) from error
    return layout, pre


def _flat_image_size(shape: tuple[int, ...], options: ExportOptions) -> tuple[int, int, int]:
    size = math.prod(shape)
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if options.input_size is not None:
        height, width = options.input_size
        for channels in (1, 3):
            if height * width * channels == size:
                return height, width, channels
        raise ExportUsageError(
            f"--input-size {height}x{width} does not fit the flat input of {size} values"
        )
    side = math.isqrt(size)
    if side * side == size:
        return side, side, 1
    raise UnsupportedModelError(
        f"the model takes a flat vector of {size} values; give the image size with "
        "--input-size HEIGHTxWIDTH"
    )


def memory_estimate(final: onnx.ModelProto, shape: tuple[int, ...]) -> tuple[int, int]:
    """Rough working memory in bytes per image (trunk) and per image and pass (stochastic part).

    Measured by running one image with two passes and keeping the largest intermediate tensors:
    tensors with 2 rows are per pass, with 1 row per image.
    """
    names = [o for node in final.graph.node for o in node.output if o]
    feeds = {"images": np.zeros((1, *shape), np.float32), "seed": np.array(0, np.int64),
             "pass_start": np.array(0, np.int64), "pass_count": np.array(2, np.int64)}
    (values,) = validate.probe_tensors(final, [feeds], names)
    per_image, per_pass = [], []
    for value in values.values():
        if value.ndim == 0:
            continue
        if value.shape[0] == 2:
            per_pass.append(value.nbytes // 2)
        elif value.shape[0] == 1:
            per_image.append(value.nbytes)
    top = PROBE_TOP_TENSORS
    return sum(sorted(per_image)[-top:]), sum(sorted(per_pass)[-top:])


def save(model: onnx.ModelProto, destination: Path) -> None:
    """Write atomically: a temporary file in the same folder, renamed into place."""
    data = model.SerializeToString()
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp",
                                         dir=destination.parent if str(destination.parent)
                                         else ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes 0600; a new file respects umask
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


__all__ = ["ExportOptions", "ExportResult", "build", "export_file", "save"]
