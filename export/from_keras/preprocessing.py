"""How mcd-score should turn pixels into the model's input: layout, size, colour and scaling.

Many models take raw 0..255 pixels and rescale or normalise them in their first layers: every
``keras.applications`` model built with ``include_preprocessing`` (MobileNetV3, EfficientNet,
EfficientNetV2, ConvNeXt) and any model that starts with ``Rescaling`` or ``Normalization``. Scaling
by the default 1/255 before such a model would scale twice and every score would be wrong, so the
default scale is 1 for them. An explicit ``--scale`` always wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from export.errors import ExportUsageError, UnsupportedModelError
from export.from_keras.backend import keras
from scorer.contract import Preprocessing

DEFAULT_SCALE = 1.0 / 255.0
# Layers between the input and its rescaling that leave values unchanged at inference.
TRANSPARENT = ("InputLayer", "Resizing", "CenterCrop")


@dataclass(frozen=True)
class Choice:
    """The preprocessing chosen, where it came from and the built-in layers found."""

    layout: str
    preprocessing: Preprocessing
    origin: str  # scorer.contract.PREPROCESSING_ORIGINS
    built_in: tuple[str, ...]

    def note(self) -> str:
        """One line for the export report."""
        pre = self.preprocessing
        scaling = f"pixel * {pre.scale:g} + {pre.offset:g}"
        if self.origin == "model":
            return (f"the model rescales its input itself ({'; '.join(self.built_in)}): pixels "
                    f"0..255 are fed unscaled ({scaling}); give --scale to override")
        if self.origin == "options":
            extra = f"; the model also rescales: {'; '.join(self.built_in)}" if self.built_in else ""
            return f"pixels fed as {scaling} (--scale){extra}"
        return (f"pixels fed as {scaling} (default 1/255: no rescaling layer at the model's "
                "input); give --scale if the model was trained on other values")


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


def choose(model: keras.Model, shape: tuple[int, ...], options) -> Choice:
    """The preprocessing for ``shape`` (without batch), from the model and ``ExportOptions``."""
    built_in = built_in_preprocessing(model)
    if options.scale is not None:
        scale, origin = options.scale, "options"
    elif built_in:
        scale, origin = 1.0, "model"
    else:
        scale, origin = DEFAULT_SCALE, "default"
    layout, height, width, channels = _image_geometry(shape, options)
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
    pre = Preprocessing(height=height, width=width, color_mode=color, scale=scale,
                        offset=options.offset, mean=options.mean, std=options.std,
                        resize_method=options.resize_method)
    try:
        pre.check()
    except ValueError as error:
        raise ExportUsageError(str(error)) from error
    return Choice(layout, pre, origin, built_in)


def _image_geometry(shape: tuple[int, ...], options) -> tuple[str, int, int, int]:
    """``(layout, height, width, channels)`` of an input shape without the batch axis."""
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
    return layout, height, width, channels


def _flat_image_size(shape: tuple[int, ...], options) -> tuple[int, int, int]:
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


__all__ = ["DEFAULT_SCALE", "Choice", "built_in_preprocessing", "choose"]
