"""Regenerate the regression reference under tests/data/regression/ -- on purpose only.

tests/test_regression.py scores the committed images with the committed model and compares the
result with the committed reference.h5 (``mcd-score compare``). Rerun this script only when a change
of results is intended (say why in the commit message):

    python scripts/make_reference.py          # rescore: rewrite reference.h5
    python scripts/make_reference.py --all    # also retrain/export model.onnx and rewrite images/
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from digits import digit_images, dropout_cnn
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent / "tests" / "data" / "regression"
SIZE = 16
PASSES = 30
SEED = 7


def build_model_and_images() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras
    import skimage.data

    from export.api import ExportOptions, build, save

    images, labels = digit_images(SIZE)
    keras.utils.set_random_seed(0)
    model = dropout_cnn(SIZE, filters=8, units=32)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images[:1500, ..., None] / 255.0, labels[:1500], epochs=5, verbose=0)
    result = build(model, ExportOptions(class_names=tuple(str(i) for i in range(10))))
    ROOT.mkdir(parents=True, exist_ok=True)
    save(result.model, ROOT / "model.onnx")
    folder = ROOT / "images"
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(1500, 1512):
        label_dir = folder / str(labels[i])
        label_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(label_dir / f"{i}.png")
    other = folder / "other"
    other.mkdir(parents=True)
    Image.fromarray(skimage.data.camera()[::8, ::8]).save(other / "camera.jpg", quality=90)
    Image.fromarray(skimage.data.coffee()[::8, ::8]).save(other / "coffee.png")
    (other / "broken.jpg").write_bytes((other / "camera.jpg").read_bytes()[:200])


def rescore() -> None:
    from scorer.scoring import ScoreOptions, score

    out = ROOT / "reference.h5"
    summary = score(ROOT / "images", out, ROOT / "model.onnx",
                    ScoreOptions(passes=PASSES, seed=SEED, mode="overwrite", device="cpu",
                                 command="scripts/make_reference.py"))
    print(f"wrote {out}: {summary.images} rows, {summary.failed} failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also rebuild model.onnx and images/")
    args = parser.parse_args()
    if args.all or not (ROOT / "model.onnx").exists():
        build_model_and_images()
    rescore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
