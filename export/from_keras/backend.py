"""TensorFlow, Keras and tf2onnx, imported once with quiet logging (the exporter's heavy imports).

Every module of the exporter that needs TensorFlow imports it from here, so the environment
variables that silence TensorFlow's C++ logging and disable oneDNN's non-deterministic kernels are
set before the first import.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

# tf2onnx logs each op it cannot convert; export.from_keras.unsupported reports them as one error instead.
tf2onnx.logging.set_level(tf2onnx.logging.CRITICAL)
tf.get_logger().setLevel("ERROR")


def versions() -> dict[str, str]:
    """Versions of the conversion stack, recorded in the metadata."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
    }


__all__ = ["keras", "tf", "tf2onnx", "versions"]
