"""How mcd-score should turn pixels into a model's input: layout, size, colour and scaling.

Shared by the front ends: each passes the input shape it found (without the batch axis), the
rescaling the model does itself (Keras' ``Rescaling``/``Normalization`` layers; none for ONNX) and,
where the graph says it, the layout. Scaling by the default 1/255 before a model that rescales its
input itself would scale twice, so the default scale is 1 for such models. An explicit ``--scale``
(or ``--preprocessing torchvision``) always wins.
"""

from __future__ import annotations

import math

from export.errors import ExportUsageError, UnsupportedModelError
from export.options import Choice, ExportOptions
from scorer.contract import Preprocessing

DEFAULT_SCALE = 1.0 / 255.0


def choose(shape: tuple[int, ...], options: ExportOptions, built_in: tuple[str, ...] = (),
           layout: str | None = None) -> Choice:
    """The preprocessing for ``shape`` (without batch), from the model and the options."""
    if options.scale is not None:
        scale, origin = options.scale, "options"
    elif built_in:
        scale, origin = 1.0, "model"
    else:
        scale, origin = DEFAULT_SCALE, "default"
    layout, height, width, channels = image_geometry(shape, options, layout)
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
    return Choice(layout, pre, origin, built_in, options.preprocessing)


def image_geometry(shape: tuple[int, ...], options: ExportOptions,
                   layout: str | None = None) -> tuple[str, int, int, int]:
    """``(layout, height, width, channels)`` of an input shape without the batch axis; ``layout``
    when the caller knows it (an ONNX graph's input), else read from where the channels are."""
    if len(shape) == 3:
        channels_first = (layout == "NCHW" if layout is not None
                          else shape[0] in (1, 3) and shape[-1] not in (1, 3))
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


__all__ = ["DEFAULT_SCALE", "choose", "image_geometry"]
