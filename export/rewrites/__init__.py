"""Graph rewrites: pure ``ModelProto -> Rewrite`` passes, one per module, and what they share.

``graph`` (walks that recurse into subgraphs, the :class:`~export.rewrites.graph.Rewrite`
result), ``builder`` (appending nodes), ``names`` (tensor names shared by the passes);
``captures``, ``erfc``, ``pad_pool`` fix the converted graph; ``prune`` keeps the sampled sites;
``stochastic`` generates the masks in the graph (``hashing``: the counter-based generator,
``masks``: each site's mask values) with the trunk cached; ``reduce`` adds the per-pass output and
its statistics.

May import: onnx, numpy and :mod:`scorer.contract`. Never TensorFlow, never ONNX Runtime.
"""
