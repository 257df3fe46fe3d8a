"""mcd-export: a trained model -> one self-contained ONNX Monte Carlo dropout graph.

``api`` is the library entry point (a model file -> a front end -> ``assemble`` -> save
atomically), ``in_memory`` the same for a Keras model object in a notebook (and predictions on
arrays), ``cli`` the ``mcd-export`` command over them. Two front ends convert a source model into
a graph with each dropout site's mask as an input: ``from_keras/`` (the only place TensorFlow is
imported, through :mod:`export.from_keras.backend`) and ``from_onnx/`` (PyTorch's and other
frameworks' ONNX exports; no framework imported). ``assemble`` holds the steps both share,
``options`` what an export is asked and decided, ``preprocessing`` how pixels are fed;
``rewrites/`` the pure ONNX graph passes, one per module; ``checks/`` the validation and the
estimates. Importing this package does not import TensorFlow. The graph interface and the metadata it
writes are defined on the runtime side, in :mod:`scorer.contract`.

Public API (imported on first use)::

    import export
    graph = export.export_model(model)                     # bytes of the validated .onnx graph
    predictions = export.predict(model, x_test, passes=50)  # scorer.predict on that graph
"""

from __future__ import annotations

from importlib import import_module

_PUBLIC = {"export_model": "export.in_memory", "predict": "export.in_memory",
           "ExportOptions": "export.api", "export_file": "export.api"}


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'export' has no attribute {name!r}")


__all__ = list(_PUBLIC)
