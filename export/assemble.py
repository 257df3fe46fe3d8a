"""The steps every export shares once a front end has converted its model (``from_keras``,
``from_onnx``): keep the sampled sites -> generate masks in-graph (trunk caching) -> add the
per-pass output and statistics -> estimate memory -> stamp metadata -> validate against the front
end's reference. Imports no framework: the reference is the front end's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx

from export.checks import cost, memory, probe, validate
from export.checks.site_report import SiteReport, site_report
from export.errors import ExportError, ExportUsageError, UnsupportedModelError
from export.options import ExportOptions, ExportResult, Inspection
from export.rewrites import prune, reduce, stochastic
from scorer.contract import DENSE_SCHEMA_VERSION, DropoutSite, ModelMetadata

IR_VERSION = 8  # the lowest that opset 17 allows; onnxruntime 1.31 reads IR <= 13
VALIDATION_IMAGES = 4


@dataclass
class Graph:
    """The converted graph with only the sampled sites as inputs, and what the report needs."""

    masked: onnx.ModelProto
    sites: list[DropoutSite]
    all_sites: list[DropoutSite]  # every convertible site, numbered as converted
    kept: list[int]  # indices into all_sites of the sampled sites
    work: cost.GraphCost  # of the graph with every site's mask as an input
    rewrites: list[str]  # what the rewrites so far changed


def check_class_names(head, options: ExportOptions) -> None:
    """``--class-names`` must name every class of the head (a one-unit sigmoid has two)."""
    _, classes = reduce.output_kind(head.activation, head.width)
    if options.class_names is not None and len(options.class_names) != classes:
        raise ExportUsageError(
            f"{len(options.class_names)} class names given for a head with {classes} classes"
        )


def keep_sampled(masked: onnx.ModelProto, found: Inspection, options: ExportOptions,
                 rewrites: list[str], what: str = "dropout layer") -> Graph:
    """From the graph with every convertible site's mask as an input, the one with only the
    sampled sites that lie on the path to the output (the others act as in inference)."""
    all_sites = found.sites
    used = prune.used_sites(masked, len(all_sites))
    keep = [k for k in found.sampled if k in used]
    if not keep:
        raise UnsupportedModelError(
            f"no {what} {'chosen by --mc-layers ' if options.mc_layers else ''}lies on the "
            f"path to output {found.head.name!r}: MC dropout would report zero uncertainty for it. "
            "Choose an output after a dropout layer with --output"
            f"{', or other layers with --mc-layers' if options.mc_layers else ''}"
        )
    ignored = [all_sites[k].path for k in found.sampled if k not in used]
    if ignored:
        found.warnings.append(f"{what}s not on the path to output {found.head.name!r} are "
                              f"ignored: {', '.join(ignored)}")
    work = cost.graph_cost(masked)
    masked, pruned = prune.keep_sites(masked, len(all_sites), keep)
    return Graph(masked, [all_sites[k] for k in keep], all_sites, keep, work, rewrites + pruned)


def build(found: Inspection, graph: Graph, reference: validate.Reference, options: ExportOptions,
          versions: dict[str, str], source_sha256: str = "", source_name: str = "") -> ExportResult:
    """The final graph with its metadata, validated against ``reference`` unless told not to."""
    final, trunk = make_final(graph, found, options.trunk)
    report = site_report(graph.all_sites, graph.kept, graph.work, trunk)
    footprint = memory.estimate(final, graph.masked, found.shape)
    metadata = make_metadata(found, graph, final, options, trunk, footprint, report, versions)
    metadata = replace(metadata, source_sha256=source_sha256, source_name=source_name)
    metadata.check()
    onnx.helper.set_model_props(final, metadata.to_props())
    result = ExportResult(None, metadata, final, found.warnings, [], notes(found, report),
                          graph.rewrites)
    if options.validate:
        result.report = run_validation(reference, found, graph, final, footprint, options)
    return result


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
                    lambda m: reduce.add_outputs(m, found.head.activation, found.head.width,
                                                     found.head.spatial)):
        final, changes = rewrite(final)
        if not changes:  # both must change the graph: an unchanged one would not sample
            raise ExportError("a graph rewrite of the export changed nothing; please report it")
        graph.rewrites.extend(changes)
    final.ir_version = max(IR_VERSION, onnx.helper.find_min_ir_version_for(
        list(final.opset_import), ignore_unknown=True))
    final.producer_name = "mcd-export"
    onnx.checker.check_model(final)
    return final, trunk


def default_opset(model: onnx.ModelProto) -> int:
    """The model's version of the default ONNX domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def make_metadata(found: Inspection, graph: Graph, final: onnx.ModelProto, options: ExportOptions,
                  trunk: str, footprint: memory.Footprint, report: SiteReport,
                  versions: dict[str, str]) -> ModelMetadata:
    """The file's metadata (without the source file's name and hash)."""
    kind, classes = reduce.output_kind(found.head.activation, found.head.width)
    return ModelMetadata(
        input_shape=(None, *found.shape), layout=found.choice.layout,
        preprocessing=found.choice.preprocessing, output_kind=kind, head=found.head.activation,
        num_outputs=classes, dropout_sites=tuple(graph.sites), class_names=options.class_names,
        versions=versions, opset=default_opset(final), ir_version=final.ir_version, trunk=trunk,
        bytes_per_image=footprint.per_image, bytes_per_image_pass=footprint.per_pass,
        preprocessing_origin=found.choice.origin, built_in_preprocessing=found.choice.built_in,
        mc_layers=options.mc_layers, per_pass_share=round(report.per_pass_share, 4),
        source_format=found.source_format, producer=found.producer,
        **({"map_shape": found.head.spatial, "schema_version": DENSE_SCHEMA_VERSION}
           if found.head.spatial else {}),
    )


def notes(found: Inspection, report: SiteReport) -> list[str]:
    """The report lines that are not validation: preprocessing, sites and hints."""
    lines = [f"preprocessing: {found.choice.note()}", *report.lines]
    if report.hint:
        lines.append(f"hint: {report.hint}")
    return lines


def run_validation(reference: validate.Reference, found: Inspection, graph: Graph,
                   final: onnx.ModelProto, footprint: memory.Footprint,
                   options: ExportOptions) -> list[str]:
    """The three checks of :mod:`export.checks.validate`, each call sized by ``--max-memory``."""
    check = validate.Validation(
        reference, found.head, graph.sites, validation_images(found, options.validation_seed),
        options.validation_seed, footprint, memory.Budget(options.max_memory), options.tolerance)
    check.measure_floor(graph.masked)
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


__all__ = ["Graph", "build", "keep_sampled", "make_final", "validation_images"]
