"""Make ``scorer/data/selftest.onnx`` and ``selftest.json``: the graph ``mcd-score doctor`` runs on
every usable provider, and Keras' own numbers for it.

A tiny Keras CNN (8x8 grayscale in, Conv2D -> BatchNormalization with non-trivial statistics ->
ReLU -> Flatten -> Dropout(0.5) -> Dense(3, softmax)), exported by mcd-export (validated), a few
KB. The JSON holds the self-test's pixels (a fixed seed), and Keras' outputs for passes 0..2 with
the in-graph masks applied to the same layer (computed by the numpy twin of the generator): what
every provider must reproduce. Run with the export extra installed::

    python scripts/make_selftest.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "scorer" / "data"
SEED = 11
PASSES = (0, 1, 2)
IMAGES = 4


def main() -> None:
    import keras

    from export.api import build, save
    from export.from_keras.reference import keras_with_masks
    from export.options import ExportOptions, Head
    from export.rewrites.masks import mask_values_np

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(4, 3, padding="same"), layers.BatchNormalization(),
        layers.ReLU(), layers.Flatten(), layers.Dropout(0.5, name="drop"),
        layers.Dense(3, activation="softmax"),
    ])
    norm = model.layers[1]
    rng = np.random.default_rng(0)
    norm.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.3, 4), rng.normal(0, 0.2, 4),
                      rng.uniform(0.5, 2.0, 4)])
    result = build(model, ExportOptions(class_names=("a", "b", "c")))
    OUT.mkdir(exist_ok=True)
    save(result.model, OUT / "selftest.onnx")
    pixels = np.random.default_rng(SEED).integers(0, 256, (IMAGES, 8, 8), dtype=np.uint8)
    inputs = (pixels.astype(np.float32) / 255.0)[..., None]
    site = result.metadata.dropout_sites[0]
    head = Head(0, "dense", "softmax", 3)
    passes = []
    for t in PASSES:
        mul, add = mask_values_np(site, 0, SEED, np.array([t]))
        passes.append(keras_with_masks(model, inputs, head, [site], [mul], [add]).tolist())
    (OUT / "selftest.json").write_text(json.dumps({
        "seed": SEED, "passes": list(PASSES), "pixels": pixels.tolist(),
        "keras_passes": passes,  # [pass][image][class]
        "note": "Keras' outputs with the exported graph's masks (scripts/make_selftest.py)",
    }) + "\n")
    print(f"wrote {OUT / 'selftest.onnx'} ({(OUT / 'selftest.onnx').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
