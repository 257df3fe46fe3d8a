"""The rescaling a Keras model does itself, for :func:`export.preprocessing.choose`.

Many models take raw 0..255 pixels and rescale or normalise them in their first layers: every
``keras.applications`` model built with ``include_preprocessing`` (MobileNetV3, EfficientNet,
EfficientNetV2, ConvNeXt) and any model that starts with ``Rescaling`` or ``Normalization``. Scaling
by the default 1/255 before such a model would scale twice and every score would be wrong, so the
default scale is 1 for them. An explicit ``--scale`` always wins.
"""

from __future__ import annotations

from export import preprocessing
from export.from_keras.backend import keras
from export.options import Choice, ExportOptions

# Layers between the input and its rescaling that leave values unchanged at inference.
TRANSPARENT = ("InputLayer", "Resizing", "CenterCrop")


def built_in_preprocessing(model: keras.Model) -> tuple[str, ...]:
    """The ``Rescaling``/``Normalization`` layers the model applies to its input first, described."""
    found, _ = _leading(model, "")
    return tuple(found)


def _leading(model, prefix: str) -> tuple[list[str], bool]:
    """(descriptions of leading rescaling layers, whether the walk stopped at another layer)."""
    found: list[str] = []
    for layer in _input_chain(model):
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            inner, stopped = _leading(layer, f"{path}/")
            found += inner
            if stopped:
                return found, True
        elif isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            found.append(_describe(layer, path))
        elif not (type(layer).__name__ in TRANSPARENT or type(layer).__name__.startswith("Random")):
            return found, True
    return found, False


def _input_chain(model) -> list:
    """Layers applied one after another to the model's single input, up to the first branch."""
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    operations = getattr(model, "operations", None)
    if operations is None or len(model.inputs) != 1:
        return []
    current, chain = model.inputs[0], []
    while True:
        consumers = [(op, node) for op in operations for node in op._inbound_nodes
                     if any(t is current for t in node.input_tensors)]
        if len(consumers) != 1 or len(consumers[0][1].output_tensors) != 1:
            return chain
        op, node = consumers[0]
        chain.append(op)
        current = node.output_tensors[0]


def _describe(layer, path: str) -> str:
    if isinstance(layer, keras.layers.Rescaling):
        return f"{path} (Rescaling scale={_short(layer.scale)} offset={_short(layer.offset)})"
    return f"{path} (Normalization)"


def _short(value) -> str:
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return "[" + ", ".join(f"{float(v):g}" for v in value) + "]"


def choose(model: keras.Model, shape: tuple[int, ...], options: ExportOptions) -> Choice:
    """The preprocessing for ``shape`` (without batch), from the model and ``ExportOptions``."""
    return preprocessing.choose(shape, options, built_in_preprocessing(model))


__all__ = ["built_in_preprocessing", "choose"]
