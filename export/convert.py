"""Everything that touches TensorFlow, Keras or tf2onnx: loading, inspecting, converting, references.

The exported graph is built in two steps. Here, the Keras model is converted with each dropout
site's call replaced by ``x * mul + add``, where ``mul`` and ``add`` are extra graph inputs
(``mcd_mul_<k>`` and ``mcd_add_<k>``, shape ``[1, *mask_shape]``). That graph is exactly Keras'
inference graph with given masks. :mod:`export.stochastic` then replaces those inputs by masks
generated in the graph.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

tf2onnx.logging.set_level(tf2onnx.logging.ERROR)
tf.get_logger().setLevel("ERROR")

from export.convert_names import ADD_INPUT, MUL_INPUT  # noqa: E402
from export.errors import ExportError, ModelLoadError, UnsupportedModelError  # noqa: E402
from scorer.contract import DropoutSite  # noqa: E402

OPSET = 17
NOISE_LAYERS = ("GaussianNoise",)
DROPOUT_ATTRIBUTES = ("dropout", "recurrent_dropout", "attention_dropout")


def versions() -> dict[str, str]:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
    }


def load_model(path: Path, unsafe: bool = False) -> keras.Model:
    """Load a ``.keras`` or legacy ``.h5`` model, in safe mode unless ``unsafe``."""
    if not path.exists():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelLoadError(
            f"model file {str(path)!r} has suffix {path.suffix!r}; expected a Keras 3 '.keras' "
            "file or a legacy Keras 2 '.h5' file"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as error:
        if "safe_mode" in str(error) or "lambda" in str(error).lower():
            raise ModelLoadError(
                f"{path} contains a Lambda layer or other custom code that Keras refuses to load "
                "in safe mode; if you trust the file, pass --unsafe"
            ) from error
        raise ModelLoadError(f"could not load {path}: {error}") from error
    except Exception as error:  # Keras raises many types for corrupt files
        raise ModelLoadError(
            f"could not load {path} as a Keras model ({type(error).__name__}: {error}); "
            "is it a complete .keras or .h5 file?"
        ) from error


def site_kind(layer: keras.layers.Layer) -> str | None:
    """The :data:`scorer.contract.SITE_KINDS` entry for a stochastic layer, else None."""
    layers = keras.layers
    if isinstance(layer, layers.GaussianDropout):
        return "gaussian_dropout"
    if isinstance(layer, layers.AlphaDropout):
        return "alpha_dropout"
    if isinstance(layer, (layers.SpatialDropout1D, layers.SpatialDropout2D,
                          layers.SpatialDropout3D)):
        return "spatial_dropout"
    if isinstance(layer, layers.Dropout):
        return "dropout"
    return None


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of the model, nested models included, in a stable order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)]


def stochastic_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers that become dropout sites (rate > 0)."""
    return [layer for layer in all_layers(model)
            if site_kind(layer) is not None and float(layer.rate) > 0]


def unreproducible_layers(model: keras.Model) -> list[str]:
    """Descriptions of layers whose training-time noise the exported graph does not reproduce."""
    found = []
    reported_cells = set()  # an RNN layer's dropout is its cell's: report it once
    for layer in all_layers(model):
        if site_kind(layer) is not None or id(layer) in reported_cells:
            continue
        if type(layer).__name__ in NOISE_LAYERS:
            found.append(f"{layer.name} ({type(layer).__name__}: additive noise)")
            continue
        for attribute in DROPOUT_ATTRIBUTES:
            value = getattr(layer, attribute, 0)
            if isinstance(value, (int, float)) and value > 0:
                found.append(f"{layer.name} ({type(layer).__name__}.{attribute}={value})")
                reported_cells.add(id(getattr(layer, "cell", None)))
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
    if input_size is not None:
        height, width = input_size
        if len(shape) == 3:
            spatial = (0, 1) if shape[-1] is not None and shape[0] in (None, height) or shape[-1] \
                in (1, 3) else (1, 2)
            shape[spatial[0]], shape[spatial[1]] = height, width
    if any(d is None for d in shape):
        raise UnsupportedModelError(
            f"the model's input shape {tuple(inputs[0].shape)} has unknown dimensions; "
            "give the image size with --input-size HEIGHTxWIDTH"
        )
    return tuple(int(d) for d in shape)


@dataclass
class Head:
    """The output the graph reports: index into ``model.outputs`` and its activation."""

    index: int
    name: str
    activation: str  # softmax | sigmoid | linear
    width: int


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
    if len(tensor.shape) != 2:
        raise UnsupportedModelError(
            f"output {names[index]!r} has shape {tuple(tensor.shape)}; mcd-export supports "
            "classifier or regression heads of shape (batch, units)"
        )
    layer = tensor._keras_history.operation
    return Head(index, names[index], _activation(layer), int(tensor.shape[-1]))


def _output_name(tensor) -> str:
    return tensor._keras_history.operation.name


def _activation(layer) -> str:
    while isinstance(layer, keras.Model):
        layer = layer.outputs[0]._keras_history.operation
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    function = getattr(layer, "activation", None)
    name = getattr(function, "__name__", "")
    return name if name in ("softmax", "sigmoid") else "linear"


@contextlib.contextmanager
def patched_sites(layers: list[keras.layers.Layer], make_call) -> Iterator[None]:
    """Temporarily replace each site layer's ``call`` by ``make_call(index, layer)``."""
    try:
        for index, layer in enumerate(layers):
            layer.call = make_call(index, layer)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)


def probe_sites(model: keras.Model, shape: tuple[int, ...]) -> list[DropoutSite]:
    """Run the model once to resolve each site's mask shape (noise shape, batch axis dropped)."""
    layers = stochastic_layers(model)
    shapes: dict[int, tuple[int, ...]] = {}
    calls = [0] * len(layers)

    def make_call(index, layer):
        def call(inputs, training=None):
            shapes.setdefault(index, _mask_shape(layer, inputs))
            calls[index] += 1
            return inputs
        return call

    with patched_sites(layers, make_call):
        run_keras(lambda: model(np.zeros((1, *shape), np.float32), training=False))
    missing = [layer.name for i, layer in enumerate(layers) if i not in shapes]
    if missing:
        raise UnsupportedModelError(f"dropout layers {missing} are not reached from the input")
    shared = [f"{layer.name} ({calls[i]} calls)" for i, layer in enumerate(layers) if calls[i] > 1]
    if shared:
        raise UnsupportedModelError(
            f"dropout layers called more than once per forward pass: {', '.join(shared)} (a shared "
            "layer, or a nested model used twice). Keras draws a fresh mask per call but the exported "
            "graph has one mask per layer and pass, which would bias the uncertainty; give each call "
            "its own Dropout layer"
        )
    return [
        DropoutSite(layer.name, site_kind(layer), float(layer.rate), shapes[i])
        for i, layer in enumerate(layers)
    ]


def run_keras(function):
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


def _mask_shape(layer, inputs) -> tuple[int, ...]:
    full = tuple(int(d) for d in inputs.shape)
    if hasattr(layer, "_get_noise_shape"):
        noise = layer._get_noise_shape(inputs)
    else:
        noise = getattr(layer, "noise_shape", None)
    if noise is None:
        return full[1:]
    resolved = [full[i] if d is None else int(d) for i, d in enumerate(noise)]
    return tuple(resolved[1:])


def convert_masked(
    model: keras.Model, shape: tuple[int, ...], sites: list[DropoutSite], head: Head
) -> onnx.ModelProto:
    """Convert with each site's mask as graph inputs (see module docstring)."""
    layers = stochastic_layers(model)
    specs = [tf.TensorSpec((None, *shape), tf.float32, name="images")]
    for k, site in enumerate(sites):
        specs.append(tf.TensorSpec((1, *site.mask_shape), tf.float32, name=MUL_INPUT.format(k)))
        if site.kind == "alpha_dropout":
            specs.append(tf.TensorSpec((1, *site.mask_shape), tf.float32,
                                       name=ADD_INPUT.format(k)))
    masks: dict[str, tf.Tensor] = {}

    def make_call(index, layer):
        def call(inputs, training=None):
            out = inputs * masks[MUL_INPUT.format(index)]
            if ADD_INPUT.format(index) in masks:
                out = out + masks[ADD_INPUT.format(index)]
            return out
        return call

    @tf.function(input_signature=specs)
    def forward(images, *mask_tensors):
        masks.clear()
        masks.update({spec.name: t for spec, t in zip(specs[1:], mask_tensors, strict=True)})
        return _select(model(images, training=False), head)

    try:
        with patched_sites(layers, make_call), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto, _ = tf2onnx.convert.from_function(forward, input_signature=specs, opset=OPSET)
    except Exception as error:  # tf2onnx raises plain exceptions for unsupported ops
        raise ExportError(
            f"tf2onnx could not convert the model: {type(error).__name__}: {error}"
        ) from error
    return proto


# ---- Keras references used by validation and tests -------------------------------------------


def keras_predict(model: keras.Model, images: np.ndarray, head: Head) -> np.ndarray:
    """Plain inference (dropout off, BatchNormalization in inference mode)."""
    return _pick(model(images, training=False), head)


def keras_with_masks(
    model: keras.Model, images: np.ndarray, head: Head,
    muls: list[np.ndarray], adds: list[np.ndarray | None], layer_ids: list[int] | None = None,
) -> np.ndarray:
    """Inference with site ``k`` computing ``x * mul[k] + add[k]`` (masks ``[1, *mask_shape]``).

    Site ``k`` is dropout layer ``layer_ids[k]`` of :func:`stochastic_layers` (default: layer
    ``k``); other dropout layers pass their input through.
    """
    layers = stochastic_layers(model)
    site_of = {layer: k for k, layer in enumerate(layer_ids or range(len(muls)))}

    def make_call(index, layer):
        def call(inputs, training=None):
            if index not in site_of:
                return inputs
            k = site_of[index]
            out = inputs * muls[k]
            return out if adds[k] is None else out + adds[k]
        return call

    with patched_sites(layers, make_call):
        return _pick(model(images, training=False), head)


def keras_dropout_passes(
    model: keras.Model, images: np.ndarray, head: Head, passes: int, rows_per_call: int = 512
) -> np.ndarray:
    """Keras' own MC dropout, dropout layers only in training mode: ``[N, T, C]``.

    Keras draws a mask per sample, so the images are repeated T times and run in a few large
    batches (the same as T separate passes), unless a ``noise_shape`` shares one mask across the
    batch; then each pass is one call. BatchNormalization stays in inference mode.
    """
    layers = stochastic_layers(model)

    def make_call(index, layer):
        original = type(layer).call

        def call(inputs, training=None):
            return original(layer, inputs, training=True)
        return call

    with patched_sites(layers, make_call):
        if any(_batch_shared_mask(layer) for layer in layers):  # one mask for the whole batch
            outs = [_pick(model(images, training=False), head) for _ in range(passes)]
            return np.stack(outs, axis=1)
        repeated = np.repeat(images, passes, axis=0)
        outs = [_pick(model(repeated[i:i + rows_per_call], training=False), head)
                for i in range(0, len(repeated), rows_per_call)]
    return np.concatenate(outs).reshape(len(images), passes, -1)


def _batch_shared_mask(layer) -> bool:
    noise = getattr(layer, "noise_shape", None)
    return noise is not None and len(noise) > 0 and noise[0] == 1


def _select(outputs, head: Head):
    """The chosen head of a model call's outputs, counted in ``model.outputs`` order.

    A dict of outputs comes back in insertion order, but ``model.outputs`` (and ``head.index``)
    follow ``keras.tree.flatten``, which sorts dict keys; flatten the same way.
    """
    if isinstance(outputs, (list, tuple, dict)):
        return keras.tree.flatten(outputs)[head.index]
    return outputs


def _pick(outputs, head: Head) -> np.ndarray:
    return np.asarray(_select(outputs, head), dtype=np.float32)
