"""Shared by the scripts: scikit-learn's handwritten digits as images, and the dropout CNN."""

from __future__ import annotations

import numpy as np
from PIL import Image


def digit_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten digits as uint8 ``size x size`` images, and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    small = (data.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
                       for img in small])
    return images, data.target


def dropout_cnn(size: int, filters: int = 32, units: int = 128):
    """The classic MNIST dropout CNN: Conv-MaxPool-Dropout(.25)-Flatten-Dense-Dropout(.5)-softmax."""
    import keras

    layers = keras.layers
    return keras.Sequential([
        keras.Input((size, size, 1)),
        layers.Conv2D(filters, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(units, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
