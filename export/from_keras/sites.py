"""Which layers are Monte Carlo sites: detection, ``--mc-layers`` selection and mask shapes.

A site is a layer whose training-time noise the exported graph samples: ``Dropout`` (with its
``noise_shape``), ``SpatialDropout1D/2D/3D``, ``GaussianDropout``, ``AlphaDropout`` and drop-path
(stochastic depth) layers, which keep or drop a whole residual branch per image: a ``Dropout`` whose
noise shape is 1 on every axis but the batch (EfficientNet's blocks), or a ``StochasticDepth`` /
``DropPath`` layer (ConvNeXt). Dropout layers inside other layers (``MultiHeadAttention``'s attention
dropout) are sites too. Layers with internal noise that is not a sub-layer (recurrent dropout,
``GaussianNoise``) are reported instead.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from export.errors import ExportUsageError, UnsupportedModelError
from export.from_keras.backend import keras, tf
from export.from_keras.model import PlacedLayer, placed_layers
from scorer.contract import DropoutSite

DROP_PATH_CLASSES = ("StochasticDepth", "DropPath")
NOISE_LAYERS = ("GaussianNoise",)
DROPOUT_ATTRIBUTES = ("dropout", "recurrent_dropout", "attention_dropout")


def site_kind(layer: keras.layers.Layer) -> str | None:
    """The :data:`scorer.contract.SITE_KINDS` entry for a stochastic layer, else None."""
    layers = keras.layers
    if isinstance(layer, layers.GaussianDropout):
        return "gaussian_dropout"
    if isinstance(layer, layers.AlphaDropout):
        return "alpha_dropout"
    if isinstance(layer, (layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D)):
        return "spatial_dropout"
    if isinstance(layer, layers.Dropout) or _is_drop_path_class(layer):
        return "dropout"
    return None


def _is_drop_path_class(layer) -> bool:
    return type(layer).__name__ in DROP_PATH_CLASSES and _rate_attribute(layer) is not None


def _rate_attribute(layer) -> str | None:
    for name in ("rate", "drop_path_rate", "drop_prob"):
        if isinstance(getattr(layer, name, None), (int, float)):
            return name
    return None


def site_rate(layer) -> float:
    """The layer's drop rate (``rate``, or ``drop_path_rate`` for stochastic depth layers)."""
    return float(getattr(layer, _rate_attribute(layer) or "rate"))


def is_drop_path(layer) -> bool:
    """Whether the layer keeps or drops its whole input per image (stochastic depth)."""
    if _is_drop_path_class(layer):
        return True
    noise = getattr(layer, "noise_shape", None)
    return (site_kind(layer) == "dropout" and noise is not None and len(noise) >= 2
            and noise[0] is None and all(d == 1 for d in noise[1:]))


def candidate_sites(model: keras.Model) -> list[PlacedLayer]:
    """Every stochastic layer with a rate above 0, in site order."""
    return [placed for placed in placed_layers(model)
            if site_kind(placed.layer) is not None and site_rate(placed.layer) > 0]


def describe(placed: PlacedLayer) -> str:
    layer = placed.layer
    return f"{placed.path} ({type(layer).__name__} {site_rate(layer):g})"


def select_sites(candidates: list[PlacedLayer], patterns: Sequence[str] | None) -> list[PlacedLayer]:
    """The candidates whose name or path matches one of the ``--mc-layers`` glob patterns.

    ``None`` selects every candidate (Gal's recipe). A pattern that matches no candidate is an
    error listing the candidates, so a typo never silently leaves a layer unsampled.
    """
    if patterns is None:
        return list(candidates)
    unmatched = [p for p in patterns if not any(_matches(c, p) for c in candidates)]
    if unmatched:
        listing = "; ".join(describe(c) for c in candidates) or "none"
        raise ExportUsageError(
            f"--mc-layers pattern{'s' if len(unmatched) > 1 else ''} "
            f"{', '.join(repr(p) for p in unmatched)} match{'' if len(unmatched) > 1 else 'es'} "
            f"no dropout layer with a rate above 0. The model's dropout layers are: {listing}. "
            "Give layer names or paths, or globs such as 'top_*'"
        )
    return [c for c in candidates if any(_matches(c, p) for p in patterns)]


def _matches(placed: PlacedLayer, pattern: str) -> bool:
    return fnmatch.fnmatchcase(placed.layer.name, pattern) or fnmatch.fnmatchcase(placed.path, pattern)


def unreproducible_layers(model: keras.Model) -> list[str]:
    """Descriptions of layers whose training-time noise the exported graph does not reproduce.

    A layer whose ``dropout`` is applied by a ``Dropout`` sub-layer (``MultiHeadAttention``) is
    reproduced: that sub-layer is a site. Recurrent dropout and additive noise are not.
    """
    found = []
    reported_cells = set()  # an RNN layer's dropout is its cell's: report it once
    for layer in (placed.layer for placed in placed_layers(model)):
        if site_kind(layer) is not None or id(layer) in reported_cells:
            continue
        if type(layer).__name__ in NOISE_LAYERS:
            found.append(f"{layer.name} ({type(layer).__name__}: additive noise)")
            continue
        for attribute in DROPOUT_ATTRIBUTES:
            value = getattr(layer, attribute, 0)
            if isinstance(value, (int, float)) and value > 0 and not _has_site_with_rate(layer, value):
                found.append(f"{layer.name} ({type(layer).__name__}.{attribute}={value})")
                reported_cells.add(id(getattr(layer, "cell", None)))
    return found


def _has_site_with_rate(layer, rate: float) -> bool:
    """Whether one of ``layer``'s sub-layers is a dropout layer with this rate (it applies it)."""
    return any(site_kind(sub) is not None and abs(site_rate(sub) - rate) < 1e-9
               for sub in layer._flatten_layers(include_self=False))


@contextlib.contextmanager
def patched_sites(layers: list[keras.layers.Layer], make_call: Callable) -> Iterator[None]:
    """Temporarily replace each site layer's ``call`` by ``make_call(index, layer)``."""
    try:
        for index, layer in enumerate(layers):
            layer.call = make_call(index, layer)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)


def run_keras(function: Callable):
    """Run a Keras call, turning TensorFlow runtime errors into a clear export error."""
    try:
        return function()
    except tf.errors.OpError as error:
        lines = [line.strip() for line in str(error.message).strip().splitlines() if line.strip()]
        first = next((line for line in lines if "NHWC" in line), lines[0] if lines else "")
        hint = ""
        if "NHWC" in first:
            hint = ("; TensorFlow runs channels_first convolutions only on a GPU: rebuild the model "
                    "with channels_last layers (the weights transfer) and export that")
        raise UnsupportedModelError(
            f"TensorFlow cannot run this model here: {type(error).__name__}: {first}{hint}"
        ) from error


@dataclass(frozen=True)
class ProbedSite:
    """A candidate site after one forward pass: its site (None if never called) and call count."""

    placed: PlacedLayer
    site: DropoutSite | None
    calls: int
    problem: str | None = None  # why the layer cannot be a site


def probe_sites(model: keras.Model, shape: tuple[int, ...], candidates: list[PlacedLayer]
                ) -> list[ProbedSite]:
    """Run the model once to resolve each candidate's mask shape and count its calls."""
    layers = [placed.layer for placed in candidates]
    shapes: dict[int, tuple[int, ...]] = {}
    problems: dict[int, str] = {}
    calls = [0] * len(layers)

    def make_call(index, layer):
        def call(inputs, training=None):
            calls[index] += 1
            if hasattr(inputs, "shape"):
                shapes.setdefault(index, mask_shape(layer, inputs))
            else:
                problems[index] = _not_one_tensor(layer, inputs)
            return inputs
        return call

    with patched_sites(layers, make_call):
        run_keras(lambda: model(np.zeros((1, *shape), np.float32), training=False))
    return [ProbedSite(p, _site(p, shapes[i]) if i in shapes and i not in problems else None,
                       calls[i], problems.get(i)) for i, p in enumerate(candidates)]


def _not_one_tensor(layer, inputs) -> str:
    count = len(inputs) if isinstance(inputs, (list, tuple, dict)) else "several"
    return (f"dropout layer {layer.name!r} ({type(layer).__name__}) is called on "
            f"{type(inputs).__name__} of {count} tensors; mcd-export samples layers called on one "
            "tensor (Keras' Dropout family, keras.applications' StochasticDepth). Leave it out with "
            "--mc-layers, or rebuild the model with a Dropout(noise_shape=(None, 1, 1, 1)) on the "
            "residual branch")


def _site(placed: PlacedLayer, shape: tuple[int, ...]) -> DropoutSite:
    layer = placed.layer
    return DropoutSite(layer.name, site_kind(layer), site_rate(layer), shape,
                       layer_class=type(layer).__name__, path=placed.path,
                       drop_path=is_drop_path(layer))


def check_probed(chosen: list[ProbedSite]) -> None:
    """Raise if a chosen site cannot be sampled, is never called or is called more than once per
    forward pass."""
    problems = [p.problem for p in chosen if p.problem]
    if problems:
        raise UnsupportedModelError("; ".join(problems))
    missing = [p.placed.path for p in chosen if p.site is None]
    if missing:
        raise UnsupportedModelError(
            f"dropout layers {missing} are not reached from the input; remove them or leave them "
            "out of --mc-layers"
        )
    shared = [f"{p.placed.path} ({p.calls} calls)" for p in chosen if p.calls > 1]
    if shared:
        raise UnsupportedModelError(
            f"dropout layers called more than once per forward pass: {', '.join(shared)} (a shared "
            "layer, or a nested model used twice). Keras draws a fresh mask per call but the exported "
            "graph has one mask per layer and pass, which would bias the uncertainty; give each call "
            "its own Dropout layer, or leave the layer out of --mc-layers"
        )


def mask_shape(layer, inputs) -> tuple[int, ...]:
    """One pass's mask shape for ``inputs`` without the batch axis (drop path: all ones)."""
    full = tuple(int(d) for d in inputs.shape)
    if _is_drop_path_class(layer):
        return (1,) * (len(full) - 1)
    if hasattr(layer, "_get_noise_shape"):
        noise = layer._get_noise_shape(inputs)
    else:
        noise = getattr(layer, "noise_shape", None)
    if noise is None:
        return full[1:]
    resolved = [full[i] if d is None else int(d) for i, d in enumerate(noise)]
    return tuple(resolved[1:])


def site_layers(model: keras.Model, sites: Sequence[DropoutSite]) -> list[keras.layers.Layer]:
    """The Keras layer of each site, found by path (by name for sites without a path)."""
    by_path = {p.path: p.layer for p in candidate_sites(model)}
    by_name = {p.layer.name: p.layer for p in candidate_sites(model)}
    try:
        return [by_path[s.path] if s.path else by_name[s.name] for s in sites]
    except KeyError as error:
        raise UnsupportedModelError(f"the model has no dropout layer {error.args[0]!r}") from error


__all__ = ["ProbedSite", "candidate_sites", "check_probed", "describe", "is_drop_path",
           "mask_shape", "patched_sites", "probe_sites", "run_keras", "select_sites", "site_kind",
           "site_layers", "site_rate", "unreproducible_layers"]
