"""Per-site mask values: what multiplies (and, for AlphaDropout, what is added to) a layer's input.

A dropout site's output is ``x * mul + add`` with, per pass ``t`` and mask element ``i``:

- ``dropout`` / ``spatial_dropout``: ``mul = keep / (1 - rate)``, ``keep = u >= rate`` (Keras' rule)
- ``gaussian_dropout``: ``mul = 1 + z * sqrt(rate / (1 - rate))``, ``z`` standard normal
- ``alpha_dropout``: ``mul = a * keep``, ``add = a * alpha_p * (1 - keep) + b`` (Keras' constants)

:func:`mask_values_np` is the numpy twin of :func:`build_mask_values`; tests and the Keras parity
check feed its masks to Keras.
"""

from __future__ import annotations

import math

import numpy as np

from export.rewrites.builder import GraphBuilder
from export.rewrites.hashing import HashOps, normal_np, uniform_np
from scorer.contract import DropoutSite

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def alpha_constants(rate: float) -> tuple[float, float, float]:
    """``(alpha_p, a, b)`` of Keras' AlphaDropout for ``rate``."""
    alpha_p = -SELU_ALPHA * SELU_SCALE
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    return alpha_p, a, b


def mask_values_np(
    site: DropoutSite, index: int, seed: int, passes: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mul, add)`` float32 ``[T, *site.mask_shape]`` for the given pass indices; add may be None."""
    size = math.prod(site.mask_shape)
    shape = (len(passes), *site.mask_shape)
    if site.kind == "gaussian_dropout":
        z = normal_np(seed, index, passes, size)
        mul = 1.0 + z * np.float32(math.sqrt(site.rate / (1.0 - site.rate)))
        return mul.astype(np.float32).reshape(shape), None
    keep = (uniform_np(seed, index, passes, size) >= np.float32(site.rate)).astype(np.float32)
    if site.kind == "alpha_dropout":
        alpha_p, a, b = alpha_constants(site.rate)
        mul = keep * np.float32(a)
        add = (np.float32(1.0) - keep) * np.float32(a * alpha_p) + np.float32(b)
        return mul.reshape(shape), add.astype(np.float32).reshape(shape)
    mul = keep * np.float32(1.0 / (1.0 - site.rate))
    return mul.reshape(shape), None


def build_mask_values(
    b: GraphBuilder, hashes: HashOps, site: DropoutSite, site_key: str, passes_u32: str
) -> tuple[str, str | None]:
    """Add the nodes computing ``(mul, add)`` float32 ``[T, *mask_shape]``; add may be None."""
    size = math.prod(site.mask_shape)
    if site.kind == "gaussian_dropout":
        z = hashes.normal(site_key, passes_u32, size)
        scale = b.const(math.sqrt(site.rate / (1.0 - site.rate)), np.float32)
        mul = b.op("Add", b.op("Mul", z, scale), b.const(1.0, np.float32))
        add = None
    else:
        u = hashes.unit(hashes.bits(site_key, passes_u32, size))
        keep = b.op("Cast", b.op("GreaterOrEqual", u, b.const(site.rate, np.float32)), to=1)
        if site.kind == "alpha_dropout":
            alpha_p, a, c = alpha_constants(site.rate)
            mul = b.op("Mul", keep, b.const(a, np.float32))
            dropped = b.op("Sub", b.const(1.0, np.float32), keep)
            add = b.op(
                "Add", b.op("Mul", dropped, b.const(a * alpha_p, np.float32)),
                b.const(c, np.float32),
            )
        else:
            mul = b.op("Mul", keep, b.const(1.0 / (1.0 - site.rate), np.float32))
            add = None
    shape = b.const([-1, *site.mask_shape], np.int64)
    mul = b.op("Reshape", mul, shape)
    if add is not None:
        add = b.op("Reshape", add, shape)
    return mul, add
