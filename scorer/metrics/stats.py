"""Running sums over the T stochastic passes: what the exported graph outputs, merged in float64.

:class:`PassStats` holds the sums of a chunk of passes of ``N`` images (``pass_sum``, ``pass_m2``,
the pass entropies and, for probabilities, the votes); :func:`merge_stats` combines chunks (Chan,
Golub and LeVeque), so ``T`` can be split into chunks without keeping ``[N, T, C]`` in memory.
:func:`pass_stats` is the numpy twin of the graph outputs. Axis convention: ``[N, T, C]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scorer.metrics.entropy import bernoulli_entropy, entropy
from scorer.results.schema import check_kind as _check_kind


@dataclass
class PassStats:
    """Running sums over ``T`` passes of ``N`` images, enough to compute every metric.

    Attributes:
        count: Number of passes ``T``.
        total: float64 ``[N, C]``, sum of the passes.
        m2: float64 ``[N, C]``, sum over passes of squared deviations from the per-image mean.
        entropy_sum: float64, sum over passes of each pass's entropy: ``[N]`` (``H[p_t]``) for
            kind ``"probabilities"``, ``[N, C]`` (each label's ``h(p_t)``) for ``"multilabel"``,
            None for ``"values"``.
        votes: float64 ``[N, C]``, number of passes whose argmax is each class (whole numbers);
            ``"probabilities"`` only, else None.
    """

    count: int
    total: np.ndarray
    m2: np.ndarray
    entropy_sum: np.ndarray | None = None
    votes: np.ndarray | None = None


def pass_stats(passes: np.ndarray, kind: str) -> PassStats:
    """The running sums of a chunk of passes, as the exported graph computes them.

    Numpy twin of the graph outputs ``pass_sum``, ``pass_m2`` and ``entropy_sum`` and ``votes``
    (probabilities) or ``label_entropy_sum`` (multilabel).

    Args:
        passes: ``[N, T, C]`` per-pass probabilities or values, any float dtype, ``T >= 1``.
        kind: ``"probabilities"``, ``"multilabel"`` or ``"values"``.

    Returns:
        :class:`PassStats` of the ``T`` passes, float64.

    Raises:
        ValueError: ``passes`` is not ``[N, T, C]`` with ``T, C >= 1``, or ``kind`` is unknown.
    """
    _check_kind(kind)
    passes = as_passes(passes)
    num_passes, num_classes = passes.shape[1], passes.shape[2]
    total = passes.sum(axis=1)
    m2 = np.sum((passes - (total / num_passes)[:, None, :]) ** 2, axis=1)
    if kind == "values":
        return PassStats(count=num_passes, total=total, m2=m2)
    if kind == "multilabel":
        return PassStats(num_passes, total, m2, bernoulli_entropy(passes).sum(axis=1))
    one_hot = passes.argmax(axis=2)[:, :, None] == np.arange(num_classes)  # [N, T, C]
    return PassStats(
        count=num_passes,
        total=total,
        m2=m2,
        entropy_sum=entropy(passes, axis=2).sum(axis=1),
        votes=one_hot.sum(axis=1).astype(np.float64),
    )


def stats_from_outputs(
    count: int,
    pass_sum: np.ndarray,
    pass_m2: np.ndarray,
    entropy_sum: np.ndarray | None = None,
    votes: np.ndarray | None = None,
) -> PassStats:
    """Wrap the reduced outputs of one graph call as float64 :class:`PassStats`.

    Args:
        count: ``pass_count`` of the call, the number of passes ``T``.
        pass_sum: ``[N, C]`` graph output ``pass_sum``.
        pass_m2: ``[N, C]`` graph output ``pass_m2``.
        entropy_sum: graph output ``entropy_sum`` ``[N]`` (probabilities) or
            ``label_entropy_sum`` ``[N, C]`` (multilabel), or None for kind ``"values"``.
        votes: ``[N, C]`` graph output ``votes`` (probabilities), else None.

    Returns:
        :class:`PassStats` with every array cast to float64.

    Raises:
        ValueError: ``count < 1`` or the shapes do not fit together.
    """
    stats = PassStats(
        count=int(count),
        total=np.asarray(pass_sum, dtype=np.float64),
        m2=np.asarray(pass_m2, dtype=np.float64),
        entropy_sum=None if entropy_sum is None else np.asarray(entropy_sum, dtype=np.float64),
        votes=None if votes is None else np.asarray(votes, dtype=np.float64),
    )
    check_stats(stats)
    return stats


def merge_stats(a: PassStats, b: PassStats) -> PassStats:
    """Combine the stats of two chunks of passes over the same images.

    Uses the parallel variance update of Chan, Golub and LeVeque:
    ``m2 = m2_a + m2_b + delta**2 * n_a * n_b / (n_a + n_b)`` with ``delta = mean_b - mean_a``.

    Args:
        a: Stats of ``n_a`` passes, arrays ``[N, C]`` and ``[N]``.
        b: Stats of ``n_b`` passes of the same ``N`` images and ``C`` outputs.

    Returns:
        Stats of all ``n_a + n_b`` passes.

    Raises:
        ValueError: the shapes differ, or one has ``entropy_sum``/``votes`` and the other not.
    """
    check_stats(a)
    check_stats(b)
    if a.total.shape != b.total.shape:
        raise ValueError(
            f"cannot merge stats of shape {a.total.shape} with stats of shape {b.total.shape}; "
            "both chunks must cover the same images and outputs"
        )
    for name in ("entropy_sum", "votes"):
        if (getattr(a, name) is None) != (getattr(b, name) is None):
            raise ValueError(
                f"cannot merge stats with and without {name}: the chunks were computed for "
                "different output kinds"
            )
    count = a.count + b.count
    delta = b.total / b.count - a.total / a.count
    m2 = a.m2 + b.m2 + delta**2 * (a.count * b.count / count)
    return PassStats(
        count=count,
        total=a.total + b.total,
        m2=m2,
        entropy_sum=None if a.entropy_sum is None else a.entropy_sum + b.entropy_sum,
        votes=None if a.votes is None else a.votes + b.votes,
    )


def as_passes(passes: np.ndarray) -> np.ndarray:
    """Return ``passes`` as a float64 ``[N, T, C]`` array, or raise ValueError."""
    passes = np.asarray(passes, dtype=np.float64)
    if passes.ndim != 3 or passes.shape[1] < 1 or passes.shape[2] < 1:
        raise ValueError(
            f"passes must have shape [N, T, C] with T >= 1 and C >= 1, got {passes.shape}"
        )
    return passes


def check_stats(stats: PassStats) -> None:
    """Raise ValueError unless ``stats`` has ``count >= 1`` and consistent array shapes."""
    if stats.count < 1:
        raise ValueError(f"stats must cover at least one pass, got count={stats.count}")
    shape = stats.total.shape
    if len(shape) != 2:
        raise ValueError(f"pass_sum must have shape [N, C], got {shape}")
    found = {"pass_m2": stats.m2.shape}
    if stats.votes is not None:
        found["votes"] = stats.votes.shape
    if stats.entropy_sum is not None and stats.entropy_sum.shape not in (shape[:1], shape):
        raise ValueError(
            f"entropy_sum must have shape [N] = {shape[:1]} or [N, C] = {shape} to match "
            f"pass_sum, got {stats.entropy_sum.shape}"
        )
    for name, found_shape in found.items():
        if found_shape != shape:
            raise ValueError(f"{name} must have the shape of pass_sum {shape}, got {found_shape}")
