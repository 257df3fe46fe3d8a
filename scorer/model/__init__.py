"""Stage 2, model: the ONNX Runtime session of an mcd-export graph, and running its passes.

``session`` opens the graph on a device and checks it against its metadata; ``passes`` plans the
calls (batch size, passes per call) within the memory budget and runs all T passes of some
images, merging the chunks' statistics.

May import: :mod:`scorer.contract`, :mod:`scorer.errors`, :mod:`scorer.metrics.stats`. Knows
nothing of files, decoding or results files.
"""
