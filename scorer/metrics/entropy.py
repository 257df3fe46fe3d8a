"""Entropies in nats, pure numpy: ``x log y`` with ``0 log 0 = 0``, Shannon and Bernoulli."""

from __future__ import annotations

import numpy as np


def xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x * log(y)``, with 0 where ``x == 0`` (so ``0 log 0`` is 0).

    Like ``scipy.special.xlogy``, a NaN ``y`` still gives NaN.

    Args:
        x: Array of any shape, broadcastable against ``y``.
        y: Array of any shape, broadcastable against ``x``.

    Returns:
        float64 array of the broadcast shape.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        product = x * np.log(y)
    return np.where((x == 0) & ~np.isnan(y), 0.0, product)


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy ``-sum p log p`` in nats, with ``0 log 0 = 0``.

    Args:
        probs: Probabilities, e.g. ``[N, C]`` or ``[N, T, C]``, summing to 1 along ``axis``.
        axis: The class axis.

    Returns:
        float64 array of ``probs``'s shape without ``axis``, e.g. ``[N]`` or ``[N, T]``.
    """
    return -np.sum(xlogy(probs, probs), axis=axis)


def bernoulli_entropy(probs: np.ndarray) -> np.ndarray:
    """``h(p) = -p log p - (1-p) log(1-p)`` in nats, elementwise (``0 log 0 = 0``).

    Args:
        probs: Probabilities of any shape, e.g. ``[N, C]`` or ``[N, T, C]``.

    Returns:
        float64 array of the same shape.
    """
    probs = np.asarray(probs, dtype=np.float64)
    return -(xlogy(probs, probs) + xlogy(1.0 - probs, 1.0 - probs))
