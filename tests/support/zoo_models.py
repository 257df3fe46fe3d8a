"""The model zoo: keras.applications backbones and attention blocks with dropout heads.

Every model is built in code with random weights (``weights=None``: nothing is downloaded) at a
small input size, with a GlobalAveragePooling/Dropout/Dense head. Random-weight backbones shrink
their features towards 0 and dropout in the head then has no visible effect, so every
BatchNormalization is first moved halfway to the statistics of random inputs in the model's own
input range (``calibrate_batchnorm``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SIZE = 32


def _keras():
    from export.from_keras.backend import keras

    return keras


def calibrate_batchnorm(model, images: np.ndarray, momentum: float = 0.5) -> None:
    """Move every BatchNormalization's statistics ``1 - momentum`` of the way to the batch
    statistics of ``images`` (one training-mode call; the weights are not trained)."""
    layers = _keras().layers
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = momentum
    model(images, training=True)
    for layer, original in zip(norms, momenta, strict=True):
        layer.momentum = original


def with_head(backbone, classes: int = 5, activation: str = "softmax", rate: float = 0.3,
              pixel_range: float = 1.0):
    """``backbone`` (calibrated on random inputs in ``[0, pixel_range)``) with a dropout head."""
    keras = _keras()
    layers = keras.layers
    rng = np.random.default_rng(0)
    calibrate_batchnorm(backbone, rng.random((32, SIZE, SIZE, 3), np.float32) * pixel_range)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = backbone(inputs, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(rate, name="head_dropout")(x)
    outputs = layers.Dense(classes, activation=activation, name="head")(x)
    return keras.Model(inputs, outputs)


def application(name: str, pixel_range: float = 1.0, **kwargs):
    keras = _keras()
    build = getattr(keras.applications, name)
    backbone = build(input_shape=(SIZE, SIZE, 3), weights=None, include_top=False, **kwargs)
    return with_head(backbone, pixel_range=pixel_range)


def vit_block():
    """A ViT-style encoder block: patch embedding, pre-norm MultiHeadAttention (attention dropout)
    and a gelu MLP with dropout, both residual, then a pooled dropout head."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(32, 8, strides=8, name="patches")(inputs)
    x = layers.Reshape((-1, 32))(x)
    y = layers.LayerNormalization(name="norm_1")(x)
    y = layers.MultiHeadAttention(4, 8, dropout=0.1, name="attention")(y, y)
    x = layers.Add()([x, y])
    y = layers.LayerNormalization(name="norm_2")(x)
    y = layers.Dense(64, activation="gelu", name="mlp_1")(y)
    y = layers.Dropout(0.1, name="mlp_dropout")(y)
    y = layers.Dense(32, name="mlp_2")(y)
    x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.3, name="head_dropout")(x)
    return keras.Model(inputs, layers.Dense(5, activation="softmax", name="head")(x))


def multilabel_cnn():
    """Six independent sigmoid labels on a small BatchNorm CNN."""
    keras = _keras()
    layers = keras.layers
    backbone = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        layers.Conv2D(16, 3, strides=2),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Conv2D(32, 3, strides=2),
        layers.BatchNormalization(),
        layers.ReLU(),
    ])
    return with_head(backbone, classes=6, activation="sigmoid")


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: its builder, the export options it needs and what the export must record."""

    build: Callable
    output_kind: str = "probabilities"
    preprocessing_origin: str = "default"
    options: tuple[tuple[str, object], ...] = ()


ZOO: dict[str, ZooModel] = {
    "efficientnet_b0": ZooModel(lambda: application("EfficientNetB0", 255.0),
                                preprocessing_origin="model"),
    "efficientnet_v2_b0": ZooModel(lambda: application("EfficientNetV2B0", 255.0),
                                   preprocessing_origin="model"),
    "convnext_tiny": ZooModel(lambda: application("ConvNeXtTiny", 255.0),
                              preprocessing_origin="model"),
    "mobilenet_v3_small": ZooModel(lambda: application("MobileNetV3Small", 255.0),
                                   preprocessing_origin="model"),
    "resnet50": ZooModel(lambda: application("ResNet50")),
    "resnet50_v2": ZooModel(lambda: application("ResNet50V2")),  # zero padding before max pooling
    "densenet121": ZooModel(lambda: application("DenseNet121")),
    "vit_block": ZooModel(vit_block),
    "multilabel_cnn": ZooModel(multilabel_cnn, output_kind="multilabel"),
}


def build_zoo_model(name: str):
    """Build zoo model ``name`` with reproducible random weights."""
    keras = _keras()
    keras.utils.set_random_seed(sum(map(ord, name)))
    return ZOO[name].build()
