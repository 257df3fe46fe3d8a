"""Dense-output (segmentation) Keras models for the tests, built in code with random weights.

``unet``: a small U-Net, SpatialDropout2D in the bottleneck and Dropout in the decoder, the
encoder's skip connections feeding the decoder, softmax over the classes per pixel.
``segnet``: a Bayesian-SegNet-style encoder-decoder (Kendall et al. 2015), dropout after the
central encoder and decoder blocks, no skips. Both take pixels 0..255 (a Rescaling layer).
"""

from __future__ import annotations

SIZE = 32


def _layers():
    from export.from_keras.backend import keras

    return keras, keras.layers


def unet(classes: int = 4, activation: str = "softmax", size: int = SIZE, seed: int = 0):
    keras, layers = _layers()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    c1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="enc_1")(x)
    c2 = layers.Conv2D(16, 3, padding="same", activation="relu", name="enc_2")(
        layers.MaxPooling2D()(c1))
    b = layers.Conv2D(32, 3, padding="same", activation="relu", name="bottleneck")(
        layers.MaxPooling2D()(c2))
    b = layers.SpatialDropout2D(0.3, name="bottleneck_dropout")(b)
    d2 = layers.Concatenate()([layers.UpSampling2D()(b), c2])
    d2 = layers.Conv2D(16, 3, padding="same", activation="relu", name="dec_2")(d2)
    d2 = layers.Dropout(0.2, name="decoder_dropout")(d2)
    d1 = layers.Concatenate()([layers.UpSampling2D()(d2), c1])
    d1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="dec_1")(d1)
    outputs = layers.Conv2D(classes, 1, activation=activation, name="classes")(d1)
    return keras.Model(inputs, outputs)


def segnet(classes: int = 3, size: int = SIZE, seed: int = 1):
    keras, layers = _layers()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    for i, width in enumerate((8, 16, 32)):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"enc_{i}")(x)
        x = layers.BatchNormalization(name=f"enc_norm_{i}")(x)
        x = layers.MaxPooling2D()(x)
        if i >= 1:  # the central blocks
            x = layers.Dropout(0.5, name=f"enc_dropout_{i}")(x)
    for i, width in enumerate((32, 16, 8)):
        x = layers.UpSampling2D()(x)
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"dec_{i}")(x)
        if i <= 1:
            x = layers.Dropout(0.5, name=f"dec_dropout_{i}")(x)
    outputs = layers.Conv2D(classes, 1, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs)
