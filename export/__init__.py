"""mcd-export: a trained model -> one self-contained ONNX Monte Carlo dropout graph.

``api`` is the library entry point (load -> convert -> rewrite -> stamp metadata -> validate ->
save atomically) and ``cli`` the ``mcd-export`` command over it. ``from_keras/`` is the Keras
side, the only place TensorFlow is imported (through :mod:`export.from_keras.backend`);
``rewrites/`` holds the pure ONNX graph passes, one per module; ``checks/`` the validation and
the estimates. Importing this package does not import TensorFlow. The graph interface and the
metadata it writes are defined on the runtime side, in :mod:`scorer.contract`.
"""
