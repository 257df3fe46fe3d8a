"""Checks and estimates of an exported graph: validation, memory, work per pass.

``probe`` runs a graph on the CPU to learn about it (intermediate tensors, ranks); ``validate``
checks the export against its source model, seen through a front end's reference (Keras, or ONNX
Runtime on the source graph); ``memory`` estimates the bytes per image and pass
that size mcd-score's calls; ``cost`` and ``site_report`` say how much of the network runs once
per pass.

May import: :mod:`export.rewrites`, :mod:`export.options` (the head the checks read),
:mod:`export.errors`, ONNX Runtime and :mod:`scorer.contract`; no front end.
"""
