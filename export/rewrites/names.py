"""Tensor names the graph rewrites share (the mask inputs are named in :mod:`scorer.contract`)."""

PASSES_1D = "mcd/passes_1d"  # int64 [1] tensor holding T, made by export.rewrites.stochastic
