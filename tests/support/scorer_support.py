"""Helpers for the scorer tests: tiny Keras models exported once per run, and image folders.

TensorFlow is imported only inside :func:`exported_model`, the first time a test asks for a model.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

DIGIT_CLASSES = tuple(f"d{i}" for i in range(10))
VALIDATION_PASSES = 50
_EXPORTS: dict[str, Path] = {}


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits upscaled to 16x16 uint8 (``[N, 16, 16]``) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return np.repeat(np.repeat(pixels, 2, axis=1), 2, axis=2), digits.target


def digit_cnn():
    """A 16x16 grayscale softmax CNN with dropout in the trunk and the head, trained one epoch."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input((16, 16, 1)),
        layers.Conv2D(8, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    pixels, labels = digit_images()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(pixels[..., None].astype(np.float32) / 255.0, labels, epochs=1, batch_size=64, verbose=0)
    return model


def linear_cnn():
    """A 16x16 grayscale CNN with a linear (regression) head of 3 values, random weights."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(11)
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(16, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(3),
    ])


def multilabel_cnn():
    """A 16x16 grayscale CNN with four independent sigmoid labels, random weights."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(13)
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(4, activation="sigmoid"),
    ])


OUTPUT_NAMES = {"regression": ("width", "height", "depth"),
                "multilabel": ("round", "bright", "edge", "noise")}
"""The names given at export to the outputs of the regression and multi-label models."""


def exported_model(tmp_path_factory, name: str = "digits") -> Path:
    """Export model ``name`` once per test run; its ``.onnx`` path. ``digits``: the softmax
    digits CNN; ``linear``: a regression head without names; ``regression``, ``multilabel``: a
    regression and a multi-label head with :data:`OUTPUT_NAMES`."""
    if name not in _EXPORTS:
        from export.api import ExportOptions, build, save

        if name == "digits":
            keras_model, options = digit_cnn(), ExportOptions(
                validation_passes=VALIDATION_PASSES, class_names=DIGIT_CLASSES)
        elif name in OUTPUT_NAMES:
            keras_model = linear_cnn() if name == "regression" else multilabel_cnn()
            options = ExportOptions(validation_passes=VALIDATION_PASSES,
                                    class_names=OUTPUT_NAMES[name])
        else:
            keras_model, options = linear_cnn(), ExportOptions(validation_passes=VALIDATION_PASSES)
        path = tmp_path_factory.mktemp(f"model-{name}") / f"{name}.onnx"
        save(build(keras_model, options).model, path)
        _EXPORTS[name] = path
    return _EXPORTS[name]


# ---- image folders --------------------------------------------------------------------------------


def write_digits(root: Path, per_class: int = 2, classes: int = 3, start: int = 0) -> list[Path]:
    """Digit PNGs in class sub-folders ``root/d<k>/<i>.png``; returns the paths written."""
    pixels, labels = digit_images()
    written = []
    for digit in range(classes):
        folder = root / f"d{digit}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(labels == digit)[start:start + per_class]
        for i, row in enumerate(rows):
            path = folder / f"{i:04d}.png"
            Image.fromarray(pixels[row]).save(path)
            written.append(path)
    return written


def write_flat_digits(root: Path, count: int) -> list[Path]:
    """``count`` digit PNGs directly in ``root`` (no labels), named in input order."""
    pixels, _ = digit_images()
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"{i:05d}.png"
        Image.fromarray(pixels[i % len(pixels)]).save(path)
        paths.append(path)
    return paths


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_photos(folder: Path) -> list[Path]:
    """A few scikit-image photographs as JPEG, much larger than the 16x16 model input."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("astronaut", "coffee", "camera"):
        path = folder / f"{name}.jpg"
        path.write_bytes(jpeg_bytes(getattr(data, name)()))
        paths.append(path)
    return paths


def write_bad_files(folder: Path) -> dict[str, str]:
    """Bad inputs in ``folder``; returns relative name -> the status each must get."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image at all\n", encoding="utf-8")
    whole = jpeg_bytes(data.camera())
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return {"empty.png": "empty file", "notes.txt": "not an image", "truncated.jpg": "truncated"}


def plain_graph(path, props: dict[str, str] | None = None) -> None:
    """A valid ONNX file with one Identity node and no mcd-export inputs."""
    import onnx

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain", [x], [y])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    proto.ir_version = 8
    if props:
        onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))


def read_h5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Every root dataset (strings decoded) and the raw root attributes of a results file."""
    with h5py.File(path, "r") as file:
        datasets = {}
        for name, dataset in file.items():
            if h5py.check_string_dtype(dataset.dtype) is not None:
                datasets[name] = np.array(dataset.asstr()[()], dtype=object)
            else:
                datasets[name] = dataset[()]
        attrs = dict(file.attrs)
    return datasets, attrs


def assert_same_datasets(a: Path, b: Path) -> None:
    """The two results files hold bit-identical datasets (NaN equal to NaN)."""
    first, _ = read_h5(a)
    second, _ = read_h5(b)
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def sqrt_values_graph(path: Path) -> None:
    """A hand-made graph of the mcd-export contract: 4x4 grayscale in, ``sqrt(mean pixel)`` out.

    Preprocessing maps pixel p to p/255 - 0.5, so dark images give the square root of a negative
    number: NaN. ``values`` kind, one output, no dropout (every pass is the same).
    """
    import json

    import onnx
    from onnx import TensorProto, helper

    def info(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["avg"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sqrt", ["avg"], ["root"]),
        helper.make_node("Unsqueeze", ["root", "one"], ["col"]),
        helper.make_node("Unsqueeze", ["col", "one"], ["cube"]),
        helper.make_node("Reshape", ["pass_count", "one"], ["t1"]),
        helper.make_node("Concat", ["one", "t1", "one"], ["reps"], axis=0),
        helper.make_node("Tile", ["cube", "reps"], ["passes"]),
        helper.make_node("ReduceSum", ["passes", "one"], ["pass_sum"], keepdims=0),
        helper.make_node("Sub", ["col", "col"], ["pass_m2"]),
    ]
    graph = helper.make_graph(
        nodes, "sqrt",
        [info("images", TensorProto.FLOAT, ["N", 4, 4, 1]), info("seed", TensorProto.INT64, []),
         info("pass_start", TensorProto.INT64, []), info("pass_count", TensorProto.INT64, [])],
        [info("passes", TensorProto.FLOAT, ["N", "T", 1]), info("pass_sum", TensorProto.FLOAT, ["N", 1]),
         info("pass_m2", TensorProto.FLOAT, ["N", 1])],
        [onnx.numpy_helper.from_array(np.array([1], np.int64), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {
        "schema_version": 1, "input_name": "images", "input_shape": [None, 4, 4, 1],
        "input_dtype": "float32", "layout": "NHWC",
        "preprocessing": {"height": 4, "width": 4, "color_mode": "grayscale", "scale": 1 / 255,
                          "offset": -0.5, "mean": None, "std": None, "resize_method": "bilinear"},
        "output_kind": "values", "head": "linear", "num_outputs": 1,
        "dropout_sites": [{"name": "none", "kind": "dropout", "rate": 0.1, "mask_shape": [1]}],
        "class_names": None, "source_sha256": "", "source_name": "", "versions": {}, "opset": 17,
        "ir_version": 8, "trunk": "input", "bytes_per_image": 64, "bytes_per_image_pass": 4,
    }
    helper.set_model_props(model, {"mcd_score": json.dumps(metadata)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def sigterm_ends_within(process, seconds: float = 5) -> None:
    """Send SIGTERM to ``process``; it must end with exit code 130 within ``seconds``."""
    import signal
    import time

    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    assert time.monotonic() - sent < seconds
    assert process.returncode == 130, process.stderr.read()
