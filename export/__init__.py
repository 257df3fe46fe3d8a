"""Keras model -> self-contained ONNX Monte Carlo dropout graph.

Importing this package does not import TensorFlow; only ``export.convert`` (and the functions of
``export.api`` that need it) do. The graph interface and metadata it writes are defined on the
runtime side, in :mod:`scorer.contract`.
"""

from export.errors import ExportError, ExportUsageError

__all__ = ["ExportError", "ExportUsageError"]
