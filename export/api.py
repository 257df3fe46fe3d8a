"""Library entry point: Keras model file -> validated, self-contained MC dropout ONNX file.

inspect (input, head, preprocessing, sites) -> convert every candidate site's mask as an input ->
report the sites -> keep the sampled sites -> generate masks in-graph (trunk caching) -> add the
per-pass output and statistics -> estimate memory -> stamp metadata -> validate -> save atomically.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from export.checks import cost, memory, probe, validate
from export.checks.site_report import SiteReport, site_report
from export.checks.validate import ATOL as DEFAULT_TOLERANCE
from export.errors import ExportError, ExportUsageError, UnsupportedModelError
from export.from_keras import convert, preprocessing, sites
from export.from_keras.backend import keras, versions
from export.from_keras.loading import load_model
from export.from_keras.model import Head, find_head, single_input_shape
from export.rewrites import prune, reduce, stochastic
from scorer.contract import DropoutSite, ModelMetadata
from scorer.rundir.atomic import atomic_write

IR_VERSION = 8  # onnxruntime 1.31 reads IR <= 13; opset 17 needs IR >= 8
VALIDATION_IMAGES = 4


@dataclass(frozen=True)
class ExportOptions:
    """Options of :func:`build`; ``None`` means "derive from the model"."""

    unsafe: bool = False
    strict: bool = False
    input_size: tuple[int, int] | None = None
    output: str | None = None
    color_mode: str | None = None
    scale: float | None = None  # None: 1/255, or 1 when the model rescales its input itself
    offset: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_method: str = "bilinear"
    class_names: tuple[str, ...] | None = None
    trunk: str = "cached"
    mc_layers: tuple[str, ...] | None = None  # names or globs of the sampled layers; None: all
    validate: bool = True
    validation_passes: int = 200
    validation_seed: int = 0
    tolerance: float = DEFAULT_TOLERANCE
    max_memory: int = 2048  # MB of working memory per validation call


@dataclass
class ExportResult:
    """What was written and what was checked."""

    path: Path | None
    metadata: ModelMetadata
    model: onnx.ModelProto
    warnings: list[str] = field(default_factory=list)
    report: list[str] = field(default_factory=list)  # validation, one line per check
    notes: list[str] = field(default_factory=list)  # preprocessing, sites, hints
    rewrites: list[str] = field(default_factory=list)  # what each graph rewrite changed, in order


@dataclass
class Inspection:
    """What inspecting the Keras model decided."""

    shape: tuple[int, ...]
    head: Head
    choice: preprocessing.Choice
    convertible: list[sites.ProbedSite]  # candidate sites the graph gets mask inputs for
    sampled: list[int]  # indices into convertible chosen by --mc-layers
    warnings: list[str]


@dataclass
class Graph:
    """The converted graph with only the sampled sites as inputs, and what the report needs."""

    masked: onnx.ModelProto
    sites: list[DropoutSite]
    all_sites: list[DropoutSite]  # every convertible site, numbered as converted
    kept: list[int]  # indices into all_sites of the sampled sites
    work: cost.GraphCost  # of the graph with every site's mask as an input
    rewrites: list[str]  # what the rewrites so far changed


def export_file(source: Path, destination: Path, options: ExportOptions) -> ExportResult:
    """Export the Keras model file ``source`` to ``destination`` (written only if valid)."""
    check_destination(destination)
    model = load_model(source, unsafe=options.unsafe)
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


def build(model: keras.Model, options: ExportOptions, source_sha256: str = "",
          source_name: str = "") -> ExportResult:
    """Build (and by default validate) the MC dropout graph of an in-memory Keras model."""
    found = inspect(model, options)
    graph = convert_sites(model, found, options)
    final, trunk = make_final(graph, found, options.trunk)
    report = site_report(graph.all_sites, graph.kept, graph.work, trunk)
    footprint = memory.estimate(final, graph.masked, found.shape)
    metadata = make_metadata(found, graph, options, trunk, footprint, report)
    metadata = replace(metadata, source_sha256=source_sha256, source_name=source_name)
    metadata.check()
    onnx.helper.set_model_props(final, metadata.to_props())
    result = ExportResult(None, metadata, final, found.warnings, [], notes(found, report),
                          graph.rewrites)
    if options.validate:
        result.report = run_validation(model, found, graph, final, footprint, options)
    return result


def inspect(model: keras.Model, options: ExportOptions) -> Inspection:
    """Input, head, preprocessing and dropout sites of the model, checked against the options."""
    warnings = sites.unreproducible_layers(model)
    if warnings and options.strict:
        raise UnsupportedModelError(
            "these layers have internal dropout or noise that the exported graph cannot "
            f"reproduce: {'; '.join(warnings)} (drop --strict to export with a warning)"
        )
    shape = single_input_shape(model, options.input_size)
    head = find_head(model, options.output)
    candidates = sites.candidate_sites(model)
    if not candidates:
        raise UnsupportedModelError(
            "the model has no Dropout, SpatialDropout, GaussianDropout, AlphaDropout or "
            "stochastic depth layer with a rate above 0: MC dropout would report zero uncertainty "
            "for every image. Add dropout before the classifier and retrain, or use a different "
            "method"
        )
    selected = sites.select_sites(candidates, options.mc_layers)
    probed = sites.probe_sites(model, shape, candidates)
    sites.check_probed([p for p in probed if p.placed in selected])
    convertible = [p for p in probed if p.site is not None and p.calls == 1]
    sampled = [i for i, p in enumerate(convertible) if p.placed in selected]
    choice = preprocessing.choose(model, shape, options)
    _, classes = reduce.output_kind(head.activation, head.width)
    if options.class_names is not None and len(options.class_names) != classes:
        raise ExportUsageError(
            f"{len(options.class_names)} class names given for a head with {classes} classes"
        )
    return Inspection(shape, head, choice, convertible, sampled, warnings)


def convert_sites(model: keras.Model, found: Inspection, options: ExportOptions) -> Graph:
    """Convert with every convertible site's mask as an input, report, keep the sampled ones."""
    all_sites = [p.site for p in found.convertible]
    masked, rewrites = convert.convert_masked(model, found.shape, all_sites, found.head)
    used = prune.used_sites(masked, len(all_sites))
    keep = [k for k in found.sampled if k in used]
    if not keep:
        raise UnsupportedModelError(
            f"no dropout layer {'chosen by --mc-layers ' if options.mc_layers else ''}lies on the "
            f"path to output {found.head.name!r}: MC dropout would report zero uncertainty for it. "
            "Choose an output after a dropout layer with --output"
            f"{', or other layers with --mc-layers' if options.mc_layers else ''}"
        )
    ignored = [all_sites[k].path for k in found.sampled if k not in used]
    if ignored:
        found.warnings.append(f"dropout layers not on the path to output {found.head.name!r} are "
                             f"ignored: {', '.join(ignored)}")
    work = cost.graph_cost(masked)
    masked, pruned = prune.keep_sites(masked, len(all_sites), keep)
    return Graph(masked, [all_sites[k] for k in keep], all_sites, keep, work, rewrites + pruned)


def make_final(graph: Graph, found: Inspection, trunk: str) -> tuple[onnx.ModelProto, str]:
    """The self-contained graph and the trunk mode used (cached falls back to input)."""
    ranks = None
    if trunk == "cached":
        frontier = stochastic.find_frontier(
            graph.masked.graph, set(stochastic.mask_input_names(graph.sites)), "cached")
        ranks = probe.frontier_ranks(graph.masked, graph.sites, frontier, found.shape)
        if ranks is None:
            found.warnings.append("could not cache the deterministic trunk (a tensor crossing into "
                                 "the stochastic part has no batch axis); every pass runs the "
                                 "whole network")
            trunk = "input"
    final = graph.masked
    for rewrite in (lambda m: stochastic.make_stochastic(m, graph.sites, trunk, ranks),
                    lambda m: reduce.add_outputs(m, found.head.activation, found.head.width)):
        final, changes = rewrite(final)
        if not changes:  # both must change the graph: an unchanged one would not sample
            raise ExportError("a graph rewrite of the export changed nothing; please report it")
        graph.rewrites.extend(changes)
    final.ir_version = IR_VERSION
    final.producer_name = "mcd-export"
    onnx.checker.check_model(final)
    return final, trunk


def make_metadata(found: Inspection, graph: Graph, options: ExportOptions, trunk: str,
                  footprint: memory.Footprint, report: SiteReport) -> ModelMetadata:
    """The file's metadata (without the source file's name and hash)."""
    kind, classes = reduce.output_kind(found.head.activation, found.head.width)
    return ModelMetadata(
        input_shape=(None, *found.shape), layout=found.choice.layout,
        preprocessing=found.choice.preprocessing, output_kind=kind, head=found.head.activation,
        num_outputs=classes, dropout_sites=tuple(graph.sites), class_names=options.class_names,
        versions=versions(),
        opset=convert.OPSET, ir_version=IR_VERSION, trunk=trunk,
        bytes_per_image=footprint.per_image, bytes_per_image_pass=footprint.per_pass,
        preprocessing_origin=found.choice.origin, built_in_preprocessing=found.choice.built_in,
        mc_layers=options.mc_layers,
        per_pass_share=round(report.per_pass_share, 4),
    )


def notes(found: Inspection, report: SiteReport) -> list[str]:
    """The report lines that are not validation: preprocessing, sites and hints."""
    lines = [f"preprocessing: {found.choice.note()}", *report.lines]
    if report.hint:
        lines.append(f"hint: {report.hint}")
    return lines


def run_validation(model: keras.Model, found: Inspection, graph: Graph, final: onnx.ModelProto,
                   footprint: memory.Footprint, options: ExportOptions) -> list[str]:
    """The three checks of :mod:`export.checks.validate`, each call sized by ``--max-memory``."""
    check = validate.Validation(
        model, found.head, graph.sites, validation_images(found, options.validation_seed),
        options.validation_seed, footprint, memory.Budget(options.max_memory), options.tolerance)
    validate.check_conversion(graph.masked, check)
    validate.check_masks(final, check)
    validate.check_statistics(final, check, options.validation_passes)
    return check.report.lines


def validation_images(found: Inspection, seed: int) -> np.ndarray:
    """Random pixels 0..255 preprocessed as the metadata says: what mcd-score will feed."""
    pre = found.choice.preprocessing
    pixels = np.random.default_rng(seed).random((VALIDATION_IMAGES, *found.shape)) * 255.0
    channel_axis = 1 if found.choice.layout == "NCHW" and len(found.shape) == 3 else -1
    images = pixels * pre.scale + pre.offset
    for values, apply in ((pre.mean, np.subtract), (pre.std, np.divide)):
        if values is not None and len(values) in (1, images.shape[channel_axis]):
            shape = [1] * images.ndim
            shape[channel_axis] = len(values)
            images = apply(images, np.asarray(values).reshape(shape))
    return images.astype(np.float32)


def save(model: onnx.ModelProto, destination: Path) -> None:
    """Write atomically (:func:`scorer.rundir.atomic.atomic_write`): a reader sees the old file
    or the whole new one."""
    atomic_write(destination, model.SerializeToString())


__all__ = ["ExportOptions", "ExportResult", "build", "export_file", "save"]
