"""Keras model -> runnable ONNX graph with each dropout site's mask as graph inputs.

Each site's ``call`` is replaced by ``x * mul + add``, where ``mul`` and ``add`` are extra graph
inputs (``mcd_mul_<k>`` and ``mcd_add_<k>``, shape ``[1, *mask_shape]``): the graph is exactly
Keras' inference graph with given masks. :mod:`export.rewrites.stochastic` later replaces those inputs by
masks generated in the graph.

tf2onnx is driven step by step instead of through ``tf2onnx.convert.from_function``, for memory
and for the layers of ``keras.applications``:

- tf2onnx deep-copies its graph before each of its optimizers; the copies are reference cycles that
  Python frees only at a full garbage collection, which may not come: 6 GB for ResNet50. Each
  optimizer here starts with ``gc.collect()`` (2 GB).
- Keras compiles grouped convolutions (ConvNeXt, ``Conv2D(groups=...)``) as an XLA function, which
  tf2onnx cannot see into; while tracing, they are plain ``tf.nn.convolution`` calls, which tf2onnx
  converts to ``Conv`` with ``group``.
- Tensors captured by value (``Normalization``'s mean and variance) become graph inputs; they are
  bound as constants (:mod:`export.rewrites.captures`). ``Erfc`` (exact gelu) becomes ``1 - Erf``
  (:mod:`export.rewrites.erfc`). Zero padding before max pooling is built with ``Concat`` so that ONNX
  Runtime cannot fold it into the pooling's -inf padding (:mod:`export.rewrites.pad_pool`). Any op still
  without an ONNX schema is reported by layer (:mod:`export.from_keras.unsupported`).
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import onnx

from export.errors import ExportError
from export.from_keras import unsupported
from export.from_keras.backend import keras, tf
from export.from_keras.model import Head, placed_layers, select_output
from export.from_keras.sites import patched_sites, site_layers
from export.rewrites import captures, erfc, pad_pool
from export.rewrites.graph import Rewrite
from scorer.contract import DropoutSite, mask_inputs

OPSET = 17


def convert_masked(
    model: keras.Model, shape: tuple[int, ...], sites: Sequence[DropoutSite], head: Head
) -> Rewrite:
    """Convert with each site's mask as graph inputs (see module docstring); the changes are
    those of the rewrites that fixed the converted graph."""
    specs = mask_specs(shape, sites)
    layers = site_layers(model, sites)
    masks: dict[str, tf.Tensor] = {}

    def make_call(index, layer):
        def call(inputs, training=None):
            mul, *add = (masks[name] for name in mask_inputs(index, sites[index].additive))
            return inputs * mul + add[0] if add else inputs * mul
        return call

    @tf.function(input_signature=specs)
    def forward(images, *mask_tensors):
        masks.clear()
        masks.update({spec.name: t for spec, t in zip(specs[1:], mask_tensors, strict=True)})
        return select_output(model(images, training=False), head)

    with patched_sites(layers, make_call), grouped_convolutions_in_graph(), \
            warnings.catch_warnings(), young_garbage_only():
        warnings.simplefilter("ignore")
        concrete = forward.get_concrete_function(*specs)
        proto = _to_onnx(concrete)
    changes: list[str] = []
    values = captured_values(concrete, len(specs))
    for rewrite in (lambda graph: captures.bind(graph, values), erfc.rewrite, pad_pool.rewrite):
        proto, done = rewrite(proto)
        changes += done
    unsupported.check(proto, {p.layer.name: type(p.layer).__name__ for p in placed_layers(model)})
    return Rewrite(proto, changes)


def mask_specs(shape: tuple[int, ...], sites: Sequence[DropoutSite]) -> list[tf.TensorSpec]:
    """The traced function's inputs: the images, then each site's mask(s)."""
    specs = [tf.TensorSpec((None, *shape), tf.float32, name="images")]
    for k, site in enumerate(sites):
        specs.extend(tf.TensorSpec((1, *site.mask_shape), tf.float32, name=name)
                     for name in mask_inputs(k, site.additive))
    return specs


def captured_values(concrete, arguments: int) -> dict[str, np.ndarray]:
    """Values of the tensors the traced function captured (not variables), by graph input name."""
    values = {}
    for placeholder, value in zip(concrete.inputs[arguments:], concrete.captured_inputs, strict=True):
        if placeholder.dtype != tf.dtypes.resource:
            values[placeholder.name] = np.asarray(value)
    return values


def _to_onnx(concrete) -> onnx.ModelProto:
    """tf2onnx's ``from_function``, with garbage collected between its optimizers."""
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common, tensor_names_from_structed

    inputs = [t.name for t in concrete.inputs if t.dtype != tf.dtypes.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    try:
        with tf.device("/cpu:0"):
            frozen = tf_loader.from_function(concrete, inputs, outputs)
            proto, _ = _convert_common(
                frozen, name=concrete.name, continue_on_error=True, opset=OPSET,
                input_names=inputs, output_names=outputs, optimizers=_collecting_optimizers(),
                tensors_to_rename=tensor_names_from_structed(concrete, inputs, outputs),
            )
    except Exception as error:  # tf2onnx raises plain exceptions for unsupported ops
        raise ExportError(
            f"tf2onnx could not convert the model: {type(error).__name__}: {error}"
        ) from error
    return proto


class _Collecting:
    """A tf2onnx optimizer factory that first frees the graph copies of the previous optimizer."""

    def __init__(self, factory) -> None:
        self.factory = factory

    def __call__(self):
        gc.collect()
        return self.factory()


def _collecting_optimizers() -> OrderedDict:
    from tf2onnx import optimizer

    return OrderedDict((name, _Collecting(factory))
                       for name, factory in optimizer._get_optimizers().items())


@contextlib.contextmanager
def young_garbage_only() -> Iterator[None]:
    """Make garbage collections inside the block skip every object that existed before it.

    A full collection over TensorFlow's and Keras' objects takes 0.2 s or more; the collections
    between tf2onnx's optimizers (and the final one, on leaving) only need to free the conversion's
    own garbage.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.collect()
        gc.unfreeze()


@contextlib.contextmanager
def grouped_convolutions_in_graph() -> Iterator[None]:
    """While tracing, run Keras' grouped convolutions as plain ``tf.nn.convolution`` (no XLA)."""
    from keras.src.backend import standardize_data_format
    from keras.src.backend.tensorflow import nn as tf_nn

    original = tf_nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        data_format = standardize_data_format(data_format)
        channels = inputs.shape[-1] if data_format == "channels_last" else inputs.shape[1]
        if channels == kernel.shape[-2]:
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        return tf.nn.convolution(
            inputs, kernel, strides, padding.upper(),
            data_format=tf_nn._convert_data_format(data_format, len(inputs.shape)),
            dilations=dilation_rate,
        )

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


__all__ = ["OPSET", "convert_masked", "mask_specs"]
