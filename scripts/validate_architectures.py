"""Export every architecture docs/export.md lists with default options and print what the
validation measured: the largest TensorFlow-ONNX Runtime difference, the float32 noise floor, the
tolerance applied and their ratio.

    python scripts/validate_architectures.py [--mode calibrated|sharp] [--gain 20] [ARCH...]
    TF_ENABLE_ONEDNN_OPTS=0 python scripts/validate_architectures.py   # the other rounding

Each model is a ``keras.applications`` backbone (``weights=None``, nothing downloaded) with a
GlobalAveragePooling -> Dropout(0.3) -> Dense(4, softmax) head, as in issue 27's report: 32x32
inputs (71 for Xception, 75 for the Inceptions) and the report's 96x96 MobileNetV3Small and
EfficientNetB0. Every BatchNormalization is set to the statistics of random inputs in the model's
range (``calibrated``); ``sharp`` also multiplies the head's kernel by ``--gain``, which makes the
softmax sensitive to the features' last bits, the way trained models are. Exit 1 if any export
fails its validation. Takes 15-30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import numpy as np

SIZES = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
ARCHITECTURES = [
    "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny", "MobileNetV3Small", "ResNet50",
    "ResNet50V2", "DenseNet121", "VGG16", "Xception", "InceptionV3", "InceptionResNetV2",
    "MobileNet", "MobileNetV2", "MobileNetV3Large", "NASNetMobile", "EfficientNetB3",
    "EfficientNetV2S", "ConvNeXtSmall", "DenseNet169", "MobileNetV3Small@96", "EfficientNetB0@96",
]
BUILT_IN_PREPROCESSING = ("MobileNetV3", "EfficientNet", "ConvNeXt")


def build(arch: str, size: int, mode: str, gain: float):
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(0)
    backbone = getattr(keras.applications, arch)(input_shape=(size, size, 3), weights=None,
                                                 include_top=False)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    x = keras.layers.Dropout(0.3)(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    pixel_range = 255.0 if arch.startswith(BUILT_IN_PREPROCESSING) else 1.0
    images = np.random.default_rng(0).random((64, size, size, 3)).astype(np.float32) * pixel_range
    norms = [layer for layer in backbone._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    backbone(images, training=True)
    if mode == "sharp":
        dense = model.layers[-1]
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel * gain, bias])
    return model


def figure(lines: list[str], pattern: str) -> float:
    found = [float(m.group(1)) for line in lines if (m := re.search(pattern, line))]
    return max(found, default=float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archs", nargs="*", default=ARCHITECTURES)
    parser.add_argument("--mode", choices=["calibrated", "sharp"], default="sharp")
    parser.add_argument("--gain", type=float, default=20.0)
    args = parser.parse_args()
    from export.api import build as export
    from export.errors import ValidationError
    from export.options import ExportOptions

    failed = 0
    print(f"{'architecture':24s} {'size':>4s} {'max diff':>9s} {'floor':>9s} {'bound':>9s} "
          f"{'diff/floor':>10s}  time")
    for name in args.archs:
        arch, _, size = name.partition("@")
        size = int(size or SIZES.get(arch, 32))
        started = time.monotonic()
        try:
            result = export(build(arch, size, args.mode, args.gain), ExportOptions())
        except ValidationError as error:
            failed += 1
            print(f"{arch:24s} {size:4d} FAILED: {error}", flush=True)
            continue
        report = result.report
        diff = figure(report, r"max \|diff\| ([0-9.e+-]+)")
        floor = figure(report, r"noise floor ([0-9.e+-]+)\)")
        floor = floor if floor == floor else figure(report, r"floor ([0-9.e+-]+) x")
        bound = figure(report, r"<= ([0-9.e+-]+)")
        print(f"{arch:24s} {size:4d} {diff:9.2e} {floor:9.2e} {bound:9.2e} "
              f"{diff / floor if floor > 0 else float('nan'):10.1f}  "
              f"{time.monotonic() - started:.0f} s", flush=True)
    print(f"{len(args.archs) - failed} of {len(args.archs)} validated with default options")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
