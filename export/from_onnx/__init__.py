"""The ONNX front end: an ONNX classifier with ``Dropout`` nodes in training mode (PyTorch's
exporters, or any other framework's) -> the converted graph with each site's mask as an input.

``loading`` reads the file (external data, opset), ``graph`` prepares it (the image input, the head,
BatchNormalization in inference), ``sites`` finds the dropout sites and refuses what cannot be one,
``convert`` turns the sites into mask inputs, ``reference`` runs the source graph in ONNX Runtime
for validation, ``front`` puts them together and hands the converted graph to
:mod:`export.assemble`. Imports no framework: no TensorFlow, no PyTorch.

May import: :mod:`export.assemble`, :mod:`export.checks` (running graphs to learn shapes),
:mod:`export.options`, :mod:`export.preprocessing`, :mod:`export.rewrites`, :mod:`export.errors`
and :mod:`scorer.contract`.
"""
