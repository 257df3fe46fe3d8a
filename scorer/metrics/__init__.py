"""Stage 3, metrics: uncertainty from per-pass outputs or their running sums, pure numpy.

``entropy`` (Shannon and Bernoulli entropies, ``0 log 0 = 0``), ``stats`` (running sums of
passes, merged across chunks), ``uncertainty`` (mean, std, entropies, mutual information,
variation ratio; axis convention ``[N, T, C]``).

May import: numpy and :mod:`scorer.results.schema` (the metric names). No ONNX Runtime, no files.
"""
