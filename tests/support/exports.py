"""Tiny Keras models built in the tests, and their exports cached for the session.

TensorFlow is imported lazily (inside the builders), so test modules that do not use these models
do not pay for it. ``conftest.py`` hands the caches out as the ``exports`` and ``zoo`` fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scorer.contract import feeds

# ---- Keras models ---------------------------------------------------------------------------------


def _keras():
    from export.from_keras.backend import keras

    return keras


def mnist_cnn():
    """The seed MNIST CNN: softmax head, dropout after the trunk's pooling and in the head."""
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])


def cnn_linear():
    """The seed CNN with dropout right after its first convolution and a linear head (16x16 input)."""
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        layers.Conv2D(128, 7, activation="relu"),
        layers.Dropout(0.2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.25),
        layers.Dense(10),
    ])


def mlp_input_dropout():
    """The seed MLP on a flat 784 vector, with dropout on its input."""
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((784,)),
        layers.Dropout(0.2),
        layers.Dense(500, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(250, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax"),
    ])


def binary_sigmoid_cnn():
    """One sigmoid unit: a two-class problem."""
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(1, activation="sigmoid"),
    ])


def batchnorm_functional():
    """Functional model with BatchNormalization (non-trivial moving statistics) before dropout."""
    keras, layers = _keras(), _keras().layers
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3)(inputs)
    norm = layers.BatchNormalization()
    x = norm(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(0.3)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights([
                rng.uniform(0.5, 2.0, gamma).astype(np.float32),
                rng.normal(0.0, 0.5, beta).astype(np.float32),
                rng.normal(0.5, 0.5, mean).astype(np.float32),
                rng.uniform(0.2, 3.0, var).astype(np.float32),
            ])
    return model


def mobilenet_nested():
    """MobileNetV2 (random weights) used as a layer, with a dropout head."""
    keras, layers = _keras(), _keras().layers
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None,
                                              include_top=False, alpha=0.35)
    _calibrate_batchnorm(backbone, np.random.default_rng(0).random((64, 32, 32, 3), np.float32))
    inputs = keras.Input((32, 32, 3))
    x = backbone(inputs, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _calibrate_batchnorm(model, images: np.ndarray, momentum: float = 0.5) -> None:
    """Move every BatchNormalization's statistics halfway to the batch statistics of ``images``.

    With random weights and the default statistics (mean 0, variance 1) MobileNetV2's features
    shrink to about 1e-11 and dropout in the head has no visible effect. Full calibration
    (``momentum=0``) gives features up to 5 but amplifies float32 rounding so much that TensorFlow
    and ONNX Runtime differ by 1.4e-4 on them (1.5e-5 on the probabilities, above the 1e-5
    parity tolerance); halfway gives features up to 0.2 that agree within 1e-7.
    """
    from zoo_models import calibrate_batchnorm

    calibrate_batchnorm(model, images, momentum)


def spatial_dropout():
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.SpatialDropout2D(0.3),
        layers.Conv2D(8, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(3, activation="softmax"),
    ])


def gaussian_dropout():
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.GaussianDropout(0.3),
        layers.Flatten(),
        layers.Dense(16, activation="relu"),
        layers.GaussianDropout(0.2),
        layers.Dense(3, activation="softmax"),
    ])


def alpha_dropout():
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        layers.Flatten(),
        layers.Dense(32, activation="selu"),
        layers.AlphaDropout(0.2),
        layers.Dense(16, activation="selu"),
        layers.AlphaDropout(0.1),
        layers.Dense(3, activation="softmax"),
    ])


def noise_shape_dropout():
    """Dropout dropping whole channels through ``noise_shape=(None, 1, 1, C)``."""
    keras, layers = _keras(), _keras().layers
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.Dropout(0.3, noise_shape=(None, 1, 1, 8)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ])


MODELS: dict[str, Callable] = {
    "mnist_cnn": mnist_cnn,
    "cnn_linear": cnn_linear,
    "mlp_input_dropout": mlp_input_dropout,
    "binary_sigmoid_cnn": binary_sigmoid_cnn,
    "batchnorm_functional": batchnorm_functional,
    "mobilenet_nested": mobilenet_nested,
    "spatial_dropout": spatial_dropout,
    "gaussian_dropout": gaussian_dropout,
    "alpha_dropout": alpha_dropout,
    "noise_shape_dropout": noise_shape_dropout,
}


def build_model(name: str):
    """Build model ``name`` of :data:`MODELS` with reproducible random weights."""
    keras = _keras()
    keras.utils.set_random_seed(sum(map(ord, name)))
    return MODELS[name]()


# ---- exported models, cached for the session ------------------------------------------------------


@dataclass
class Exported:
    """A Keras model and its export (``result.model`` is the ONNX ModelProto)."""

    name: str
    keras_model: object
    result: object  # export.api.ExportResult
    options: object  # export.api.ExportOptions
    _session: object = None

    @property
    def onnx_model(self):
        return self.result.model

    @property
    def metadata(self):
        return self.result.metadata

    @property
    def session(self):
        if self._session is None:
            self._session = ort_session(self.onnx_model)
        return self._session

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata.input_shape[1:])

    def head(self):
        from export.from_keras.model import find_head

        return find_head(self.keras_model, None)

    def run(self, images: np.ndarray, seed: int = 0, start: int = 0, count: int = 4,
            outputs: list[str] | None = None) -> list[np.ndarray]:
        return self.session.run(outputs, feeds(images, seed, start, count))

    def passes(self, images: np.ndarray, seed: int = 0, start: int = 0, count: int = 4) -> np.ndarray:
        return self.run(images, seed, start, count, ["passes"])[0]


def ort_session(model_or_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class ExportCache:
    """Exports each (model, trunk) once per session; the Keras model is shared between trunks."""

    VALIDATION_PASSES = 40
    feeds = staticmethod(feeds)
    ort_session = staticmethod(ort_session)

    def __init__(self) -> None:
        self._keras: dict[str, object] = {}
        self._exports: dict[tuple[str, str], Exported] = {}

    def keras_model(self, name: str):
        if name not in self._keras:
            self._keras[name] = build_model(name)
        return self._keras[name]

    def get(self, name: str, trunk: str = "cached") -> Exported:
        """The export of model ``name``; the cached trunk is validated, the naive one is not."""
        key = (name, trunk)
        if key not in self._exports:
            from export.api import ExportOptions, build

            options = ExportOptions(trunk=trunk, validate=trunk == "cached",
                                    validation_passes=self.VALIDATION_PASSES)
            model = self.keras_model(name)
            self._exports[key] = Exported(name, model, build(model, options), options)
        return self._exports[key]


class ZooCache:
    """Exports each zoo model (``tests/support/zoo_models.py``) once per session, validated."""

    VALIDATION_PASSES = 40

    def __init__(self) -> None:
        self._exports: dict[str, Exported] = {}

    def get(self, name: str) -> Exported:
        if name not in self._exports:
            from zoo_models import ZOO, build_zoo_model

            from export.api import ExportOptions, build

            options = ExportOptions(validation_passes=self.VALIDATION_PASSES,
                                    **dict(ZOO[name].options))
            model = build_zoo_model(name)
            self._exports[name] = Exported(name, model, build(model, options), options)
        return self._exports[name]
