"""Reading a Keras model: its layers (with their place in nested models), image input and head."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from export.errors import UnsupportedModelError
from export.from_keras.backend import keras
from export.options import Head


@dataclass(frozen=True)
class PlacedLayer:
    """A layer and its path through the nested models and layers that contain it."""

    layer: keras.layers.Layer
    path: str  # e.g. "efficientnetb0/block2a_drop"; a top-level layer's path is its name


def placed_layers(model: keras.Model) -> list[PlacedLayer]:
    """Every layer of the model, nested models and sub-layers included.

    The order is Keras' own ``model._flatten_layers(include_self=False)`` order (a depth-first walk
    that visits each layer's children last-first), which numbers the dropout sites: keeping it keeps
    the masks of existing exports.
    """
    found = []
    seen: set[int] = set()
    queue = collections.deque((layer, "") for layer in model._layers)
    while queue:
        layer, parent = queue.popleft()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = f"{parent}/{layer.name}" if parent else layer.name
        found.append(PlacedLayer(layer, path))
        queue.extendleft((child, path) for child in layer._layers)
    return found


def single_input_shape(model: keras.Model, input_size: tuple[int, int] | None) -> tuple[int, ...]:
    """The model's image input shape without the batch axis, spatial size filled in."""
    inputs = model.inputs
    if len(inputs) != 1:
        names = ", ".join(repr(getattr(t, "name", "?")) for t in inputs)
        raise UnsupportedModelError(
            f"the model has {len(inputs)} inputs ({names}); mcd-export needs a model with one "
            "image input: build a single-input model around the image branch and export that"
        )
    shape = list(inputs[0].shape[1:])
    if input_size is not None and len(shape) == 3:
        height, width = input_size
        channels_last = shape[-1] is not None and shape[0] in (None, height) or shape[-1] in (1, 3)
        spatial = (0, 1) if channels_last else (1, 2)
        shape[spatial[0]], shape[spatial[1]] = height, width
    if any(d is None for d in shape):
        raise UnsupportedModelError(
            f"the model's input shape {tuple(inputs[0].shape)} has unknown dimensions; "
            "give the image size with --input-size HEIGHTxWIDTH"
        )
    return tuple(int(d) for d in shape)


def find_head(model: keras.Model, output: str | None) -> Head:
    """Pick the output (``--output NAME`` when there are several) and detect its activation."""
    outputs = model.outputs
    names = [_output_name(t) for t in outputs]
    structure = getattr(model, "_outputs_struct", None)
    if isinstance(structure, dict) and output in structure:
        output = names[sorted(structure).index(output)]  # a dict key: outputs are in key order
    if output is None:
        if len(outputs) != 1:
            raise UnsupportedModelError(
                f"the model has {len(outputs)} outputs ({', '.join(names)}); "
                "choose one with --output NAME"
            )
        index = 0
    elif output in names:
        index = names.index(output)
    else:
        raise UnsupportedModelError(
            f"the model has no output {output!r}; its outputs are: {', '.join(names)}"
        )
    tensor = outputs[index]
    shape = tuple(tensor.shape)
    if len(shape) not in (2, 4):
        raise UnsupportedModelError(
            f"output {names[index]!r} has shape {shape}; mcd-export supports classifier or "
            "regression heads of shape (batch, units) and dense outputs of shape (batch, height, "
            "width, channels)"
        )
    if len(shape) == 4 and any(d is None for d in shape[1:]):
        raise UnsupportedModelError(
            f"dense output {names[index]!r} has shape {shape}: its size does not follow from the "
            "model's input; build the model with a fixed input size (keras.Input((H, W, C)))"
        )
    layer = tensor._keras_history.operation
    return Head(index, names[index], _activation(layer), int(shape[-1]),
                tuple(int(d) for d in shape[1:-1]))


def _output_name(tensor) -> str:
    return tensor._keras_history.operation.name


def _activation(layer) -> str:
    while isinstance(layer, keras.Model):
        layer = layer.outputs[0]._keras_history.operation
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.Activation):
        function = layer.activation
    else:
        function = getattr(layer, "activation", None)
    name = getattr(function, "__name__", "")
    return name if name in ("softmax", "sigmoid") else "linear"


def select_output(outputs, head: Head):
    """The chosen head of a model call's outputs, counted in ``model.outputs`` order.

    A dict of outputs comes back in insertion order, but ``model.outputs`` (and ``head.index``)
    follow ``keras.tree.flatten``, which sorts dict keys; flatten the same way.
    """
    if isinstance(outputs, (list, tuple, dict)):
        return keras.tree.flatten(outputs)[head.index]
    return outputs


__all__ = ["Head", "PlacedLayer", "find_head", "placed_layers", "select_output",
           "single_input_shape"]
