"""The best hand-written Keras MC dropout, the anchor scripts/bench.py compares mcd-score with.

What a skilled Keras user writes without mcd-score: a ``tf.data`` pipeline that reads and decodes
the JPEG files in parallel (``num_parallel_calls=AUTOTUNE``, DCT-domain downscaling through
``decode_jpeg(ratio=...)`` where the files are at least twice the model input, as Pillow's draft
mode does), resizes and scales them as the model's preprocessing says, batches and prefetches; the
deterministic trunk (every layer before the first dropout) runs once per image, and only the
stochastic head runs T times, on the trunk's output tiled T times in one vectorised batch. The
per-image mean, std, predictive and expected entropy, mutual information and votes are computed
in the graph; nothing is written to disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

DROPOUTS = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
            keras.layers.SpatialDropout3D, keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def split_at_first_dropout(model: keras.Model) -> tuple[list, list]:
    """The layers of a chain model before its first dropout (the trunk) and from it on (the head)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    first = next(i for i, layer in enumerate(layers) if isinstance(layer, DROPOUTS))
    return layers[:first], layers[first:]


def draft_ratio(file_size: tuple[int, int], model_size: tuple[int, int]) -> int:
    """The ``decode_jpeg`` ratio (1, 2, 4 or 8) Pillow's draft mode would pick for these sizes."""
    scale = min(file_size[0] // model_size[0], file_size[1] // model_size[1])
    return next((ratio for ratio in (8, 4, 2) if scale >= ratio), 1)


class KerasMC:
    """Hand-written MC dropout over image files with ``passes`` vectorised head passes.

    Args:
        model: A chain Keras model (layers called one after the other).
        pre: The model's :class:`scorer.contract.Preprocessing` (size, colour, scale, offset).
        passes: T.
        file_size: ``(height, width)`` of the files, known to the user (sets the DCT ratio).
        batch_size: Images per batch.
    """

    def __init__(self, model: keras.Model, pre, passes: int, file_size: tuple[int, int],
                 batch_size: int = 32) -> None:
        self.trunk, self.head = split_at_first_dropout(model)
        self.pre, self.passes, self.batch_size = pre, passes, batch_size
        self.ratio = draft_ratio(file_size, (pre.height, pre.width))
        self.step = tf.function(self._step, reduce_retracing=True)

    def _load(self, path: tf.Tensor) -> tf.Tensor:
        pre = self.pre
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=pre.channels, ratio=self.ratio)
        image = tf.image.resize(image, (pre.height, pre.width), method=pre.resize_method)
        image = image * pre.scale + pre.offset
        if pre.mean is not None:
            image = (image - tf.constant(pre.mean, tf.float32)) / tf.constant(pre.std, tf.float32)
        return image

    def _step(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        features = images
        for layer in self.trunk:
            features = layer(features, training=False)
        tiled = tf.repeat(features, self.passes, axis=0)  # [N*T, ...]: image-major
        for layer in self.head:
            tiled = layer(tiled, training=True)
        probs = tf.reshape(tiled, (-1, self.passes, tiled.shape[-1]))  # [N, T, C]
        mean = tf.reduce_mean(probs, axis=1)
        entropy = -tf.reduce_sum(tf.math.xlogy(probs, probs), axis=-1)  # [N, T]
        predictive = -tf.reduce_sum(tf.math.xlogy(mean, mean), axis=-1)
        expected = tf.reduce_mean(entropy, axis=1)
        votes = tf.reduce_sum(tf.one_hot(tf.argmax(probs, axis=-1), probs.shape[-1]), axis=1)
        return {"mean": mean, "std": tf.math.reduce_std(probs, axis=1),
                "predictive_entropy": predictive, "mutual_information": predictive - expected,
                "variation_ratio": 1.0 - tf.reduce_max(votes, axis=-1) / self.passes}

    def run(self, paths: Sequence[str]) -> int:
        """Score every file (results are computed and dropped); returns the number of images."""
        dataset = (tf.data.Dataset.from_tensor_slices(list(paths))
                   .map(self._load, num_parallel_calls=tf.data.AUTOTUNE)
                   .batch(self.batch_size).prefetch(tf.data.AUTOTUNE))
        count = 0
        for images in dataset:
            result = self.step(images)
            count += int(result["mean"].shape[0])
        return count


def serve() -> None:
    """The Keras anchors in their own process, so they run with TensorFlow's defaults (oneDNN on:
    the exporter in scripts/bench.py's process turns it off, which slows TensorFlow on the CPU by
    about 30%, and a user's script would not). Reads a JSON job from argv, prints ``ready``, then
    answers each line ``keras-loop`` or ``keras-mc`` on stdin with its images/s."""
    import json
    import sys
    import time

    import numpy as np

    from scorer.contract import Preprocessing

    job = json.loads(sys.argv[2])
    model = keras.models.load_model(job["model"])
    pre = Preprocessing(**{**job["pre"], "mean": job["pre"]["mean"] and tuple(job["pre"]["mean"]),
                           "std": job["pre"]["std"] and tuple(job["pre"]["std"])})
    runner = KerasMC(model, pre, job["passes"], tuple(job["file_size"]), batch_size=job["batch"])
    x = np.random.default_rng(0).random((job["loop"], *model.inputs[0].shape[1:]),
                                        dtype=np.float32)

    def loop() -> None:
        for _ in range(job["passes"]):
            model(x, training=True)

    work = {"keras-loop": (loop, job["loop"]),
            "keras-mc": (lambda: runner.run(job["files"]), len(job["files"]))}
    print("ready", flush=True)
    for line in sys.stdin:
        function, count = work[line.strip()]
        start = time.perf_counter()
        function()
        print(count / (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["serve"]:
        serve()
