"""Keras model -> self-contained ONNX Monte Carlo dropout graph.

Importing this package does not import TensorFlow. The modules that read Keras models or convert
them (``api``, ``backend``, ``convert``, ``keras_model``, ``loading``, ``preprocessing``,
``reference``, ``sites``, ``validate``) import it through :mod:`export.backend`; the graph passes
(``graph``, ``captures``, ``erfc``, ``unsupported``, ``prune``, ``stochastic``, ``reduce``) and the
estimates (``cost``, ``memory``, ``report``) are pure ONNX. The graph interface and metadata it
writes are defined on the runtime side, in :mod:`scorer.contract`.
"""

from export.errors import ExportError, ExportUsageError

__all__ = ["ExportError", "ExportUsageError"]
