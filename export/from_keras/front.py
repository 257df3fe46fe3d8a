"""The Keras front end: a ``keras.Model`` -> the converted graph with every convertible dropout
site's mask as an input, then :mod:`export.assemble` for the rest.

inspect (input, head, preprocessing, sites) -> convert with every candidate site's mask as an input
-> keep the sampled sites -> :func:`export.assemble.build` against Keras itself.
"""

from __future__ import annotations

from export.assemble import Graph, check_class_names, keep_sampled
from export.assemble import build as assemble
from export.errors import ExportUsageError, UnsupportedModelError
from export.from_keras import convert, preprocessing, sites
from export.from_keras.backend import keras, versions
from export.from_keras.model import find_head, single_input_shape
from export.from_keras.reference import KerasReference
from export.options import ExportOptions, ExportResult, Inspection


def build(model: keras.Model, options: ExportOptions, source_sha256: str = "",
          source_name: str = "") -> ExportResult:
    """Build (and by default validate) the MC dropout graph of an in-memory Keras model."""
    found = inspect(model, options)
    graph = convert_sites(model, found, options)
    return assemble(found, graph, KerasReference(model, found.head), options, versions(),
                    source_sha256, source_name)


def inspect(model: keras.Model, options: ExportOptions) -> Inspection:
    """Input, head, preprocessing and dropout sites of the model, checked against the options."""
    if options.head is not None or options.layout is not None:
        given = "--head" if options.head is not None else "--layout"
        raise ExportUsageError(f"{given} is for ONNX models; a Keras model's head and layout "
                               "are read from its layers")
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
    check_class_names(head, options)
    return Inspection(shape, head, choice, [p.site for p in convertible], sampled, warnings,
                      "keras", f"keras {keras.__version__}")


def convert_sites(model: keras.Model, found: Inspection, options: ExportOptions) -> Graph:
    """Convert with every convertible site's mask as an input, report, keep the sampled ones."""
    masked, rewrites = convert.convert_masked(model, found.shape, found.sites, found.head)
    return keep_sampled(masked, found, options, rewrites)


__all__ = ["build", "convert_sites", "inspect"]
