"""Keras references the exported graph is validated against, run in chunks of ``rows`` images.

Only the chosen sites' layers are sampled or given masks; every other dropout layer is identity
(inference behaviour), also where the model calls it with ``training=True`` (the "dropout baked
in" recipe), and BatchNormalization stays in inference mode throughout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from export.from_keras.backend import keras
from export.from_keras.model import select_output
from export.from_keras.sites import candidate_sites, patched_sites, run_keras, site_layers
from export.options import Head
from scorer.contract import DropoutSite


@dataclass
class KerasReference:
    """:class:`export.checks.validate.Reference` for a Keras model: Keras itself."""

    model: keras.Model
    head: Head
    name: str = "Keras"

    def predict(self, images: np.ndarray, rows: int) -> np.ndarray:
        return keras_predict(self.model, images, self.head, rows)

    def with_masks(self, images: np.ndarray, sites: Sequence[DropoutSite],
                   muls: Sequence[np.ndarray], adds: Sequence[np.ndarray | None],
                   rows: int) -> np.ndarray:
        return keras_with_masks(self.model, images, self.head, sites, muls, adds, rows)

    def dropout_passes(self, images: np.ndarray, sites: Sequence[DropoutSite], passes: int,
                       rows: int) -> np.ndarray:
        return keras_dropout_passes(self.model, images, self.head, sites, passes, rows)


def keras_predict(model: keras.Model, images: np.ndarray, head: Head, rows: int = 64) -> np.ndarray:
    """Plain inference (dropout off, every dropout layer identity): ``[N, width]``."""
    with _identity_except(model, []):
        return _chunked(model, images, head, rows)


@contextlib.contextmanager
def _identity_except(model: keras.Model, sites: Sequence) -> Iterator[None]:
    """Every dropout layer of ``model`` but ``sites`` (layers) runs as in inference, whatever
    ``training`` the model calls it with."""
    chosen = {id(layer) for layer in sites}
    others = [p.layer for p in candidate_sites(model) if id(p.layer) not in chosen]

    def in_inference(k, layer):
        original = type(layer).call

        def call(inputs, *args, training=None, **kwargs):
            return original(layer, inputs, *args, training=False, **kwargs)
        return call

    with patched_sites(others, in_inference):
        yield


def keras_with_masks(
    model: keras.Model, images: np.ndarray, head: Head, sites: Sequence[DropoutSite],
    muls: Sequence[np.ndarray], adds: Sequence[np.ndarray | None], rows: int = 64,
) -> np.ndarray:
    """Inference with site ``k`` computing ``x * muls[k] + adds[k]`` (masks ``[1, *mask_shape]``)."""
    def make_call(k, layer):
        def call(inputs, training=None):
            out = inputs * muls[k]
            return out if adds[k] is None else out + adds[k]
        return call

    layers = site_layers(model, sites)
    with patched_sites(layers, make_call), _identity_except(model, layers):
        return _chunked(model, images, head, rows)


def keras_dropout_passes(
    model: keras.Model, images: np.ndarray, head: Head, sites: Sequence[DropoutSite], passes: int,
    rows: int = 64,
) -> np.ndarray:
    """Keras' own MC dropout, only the sites' layers in training mode: ``[N, T, width]``
    (``[N, T, H, W, C]`` for dense outputs).

    Keras draws a mask per sample, so each image is repeated T times and the ``N * T`` rows run in
    calls of at most ``rows`` (the same as T separate passes), unless a ``noise_shape`` shares one
    mask across the batch; then each pass is its own call.
    """
    layers = site_layers(model, sites)

    def make_call(k, layer):
        original = type(layer).call

        def call(inputs, training=None):
            return original(layer, inputs, training=True)
        return call

    with patched_sites(layers, make_call), _identity_except(model, layers):
        if any(_batch_shared_mask(layer) for layer in layers):  # one mask for the whole batch
            outs = [_chunked(model, images, head, rows) for _ in range(passes)]
            return np.stack(outs, axis=1)
        total = len(images) * passes
        outs = [_call(model, images[np.arange(start, min(start + rows, total)) // passes], head)
                for start in range(0, total, rows)]
    out = np.concatenate(outs)
    return out.reshape(len(images), passes, *out.shape[1:])


def _chunked(model: keras.Model, images: np.ndarray, head: Head, rows: int) -> np.ndarray:
    rows = max(1, rows)
    return np.concatenate([_call(model, images[i:i + rows], head)
                           for i in range(0, len(images), rows)])


def _call(model: keras.Model, images: np.ndarray, head: Head) -> np.ndarray:
    return np.asarray(run_keras(lambda: select_output(model(images, training=False), head)),
                      dtype=np.float32)


def _batch_shared_mask(layer) -> bool:
    noise = getattr(layer, "noise_shape", None)
    return noise is not None and len(noise) > 0 and noise[0] == 1


__all__ = ["KerasReference", "keras_dropout_passes", "keras_predict", "keras_with_masks"]
