"""Keras model -> self-contained ONNX Monte Carlo dropout graph.

Importing this package does not import TensorFlow; only ``export.convert`` (and the functions of
``export.api`` that need it) do.
"""

from export.errors import ExportError, ExportUsageError
from export.metadata import SCHEMA_VERSION, DropoutSite, ModelMetadata, Preprocessing

__all__ = [
    "SCHEMA_VERSION",
    "DropoutSite",
    "ExportError",
    "ExportUsageError",
    "ModelMetadata",
    "Preprocessing",
]
