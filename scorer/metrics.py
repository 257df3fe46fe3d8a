"""Monte Carlo dropout uncertainty metrics, pure numpy.

Axis convention everywhere: per-pass predictions ``passes`` have shape ``[N, T, C]`` (``N`` images,
``T`` stochastic passes, ``C`` classes or outputs). ``kind`` is ``"probabilities"`` (rows that sum
to 1, as from a softmax head), ``"multilabel"`` (``C`` independent sigmoid probabilities, each a
Bernoulli distribution) or ``"values"`` (raw regression outputs, only ``mean`` and ``std``).
Logarithms are natural, so entropies are in nats, and ``0 log 0`` is 0 (see :func:`xlogy`). The
metric names and their order come from :mod:`scorer.schema`.

There are two ways to the same numbers:

- :func:`summarize_passes` is the reference, computed straight from ``passes``.
- :func:`metrics_from_stats` works from :class:`PassStats`, the running sums the exported graph
  outputs (``pass_sum``, ``pass_m2``, ``entropy_sum``, ``votes``; see :mod:`scorer.contract`).
  Stats of chunks of passes of the same images combine with :func:`merge_stats`, so ``T`` can be
  split into chunks without keeping ``[N, T, C]`` in memory.

The probability metrics follow Gal's thesis and BALD (Houlsby et al. 2011): predictive entropy
``H[mean_t p_t]`` (total uncertainty), expected entropy ``mean_t H[p_t]`` (aleatoric) and their
difference, the mutual information (epistemic). For ``multilabel`` heads the same three are
computed per label with the Bernoulli entropy ``h(p) = -p log p - (1-p) log(1-p)`` and also summed
over labels (the entropy of independent labels is the sum of theirs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scorer import schema
from scorer.schema import check_kind as _check_kind
from scorer.schema import metric_names

PROBABILITY_METRICS = metric_names("probabilities")
MULTILABEL_METRICS = metric_names("multilabel")
VALUE_METRICS = metric_names("values")


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


def summarize_passes(passes: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """Compute every metric straight from the per-pass predictions (the reference computation).

    Metrics for kind ``"probabilities"`` (kind ``"values"`` gives only ``mean`` and ``std``):

    - ``mean`` float64 ``[N, C]``: mean over the ``T`` passes.
    - ``std`` float64 ``[N, C]``: population standard deviation over the passes (divides by ``T``).
    - ``predicted_class`` int64 ``[N]``: argmax of ``mean`` (first class on ties).
    - ``confidence`` float64 ``[N]``: max of ``mean``.
    - ``predictive_entropy`` float64 ``[N]``: ``H[mean]``, total uncertainty.
    - ``expected_entropy`` float64 ``[N]``: mean over passes of ``H[p_t]``, aleatoric uncertainty.
    - ``mutual_information`` float64 ``[N]``: ``H[mean] - E_t H[p_t]`` (BALD), epistemic
      uncertainty. It is non-negative and at most ``H[mean]`` in exact arithmetic; the result is
      clipped to ``[0, predictive_entropy]`` to remove rounding noise.
    - ``variation_ratio`` float64 ``[N]``: ``1 - m / T`` where ``m`` is the number of passes
      whose argmax is the modal (most frequent) per-pass class.

    Kind ``"multilabel"`` gives ``mean``, ``std``, the per-label ``[N, C]`` ``label_entropy``
    (``h(mean)``), ``label_expected_entropy`` (``E_t h(p_t)``) and ``label_mutual_information``
    (their difference, clipped to ``[0, label_entropy]``), and their sums over labels as
    ``predictive_entropy``, ``expected_entropy`` and ``mutual_information`` ``[N]``.

    Args:
        passes: ``[N, T, C]`` per-pass probabilities or values, any float dtype, ``T >= 1``.
        kind: ``"probabilities"``, ``"multilabel"`` or ``"values"``.

    Returns:
        Metric name -> array, with the keys of :func:`metric_names` in that order.

    Raises:
        ValueError: ``passes`` is not ``[N, T, C]`` with ``T, C >= 1``, or ``kind`` is unknown.
    """
    _check_kind(kind)
    passes = _as_passes(passes)
    mean = passes.mean(axis=1)
    values: dict[str, np.ndarray] = {"mean": mean, "std": passes.std(axis=1)}
    if kind == "multilabel":
        values.update(_multilabel_metrics(mean, bernoulli_entropy(passes).mean(axis=1)))
    elif kind == "probabilities":
        num_passes, num_classes = passes.shape[1], passes.shape[2]
        pass_classes = passes.argmax(axis=2)  # [N, T]
        class_counts = (pass_classes[:, :, None] == np.arange(num_classes)).sum(axis=1)  # [N, C]
        values.update(_probability_metrics(mean, entropy(passes, axis=2).mean(axis=1)))
        values["variation_ratio"] = 1.0 - class_counts.max(axis=1) / num_passes
    return {name: values[name] for name in metric_names(kind)}


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
    passes = _as_passes(passes)
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
    _check_stats(stats)
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
    _check_stats(a)
    _check_stats(b)
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


def metrics_from_stats(stats: PassStats, kind: str) -> dict[str, np.ndarray]:
    """Compute every metric from running sums; same keys and values as :func:`summarize_passes`.

    Agrees with :func:`summarize_passes` to rounding (within 1e-9 for float64 passes).

    Args:
        stats: Stats of ``T`` passes, arrays ``[N, C]`` and ``[N]`` (or ``[N, C]``).
        kind: ``"probabilities"``, ``"multilabel"`` or ``"values"``.

    Returns:
        Metric name -> array (per-class metrics ``[N, C]``, the others ``[N]``), with the keys of
        :func:`metric_names` in that order.

    Raises:
        ValueError: ``kind`` is unknown, or the stats lack what ``kind`` needs.
    """
    _check_kind(kind)
    _check_stats(stats)
    mean = stats.total / stats.count
    # m2 is a sum of squares; clip the tiny negatives a merge can leave before the square root.
    values: dict[str, np.ndarray] = {"mean": mean, "std": np.sqrt(np.maximum(stats.m2, 0.0) / stats.count)}
    if kind != "values":
        _check_has(stats, kind)
        expected = stats.entropy_sum / stats.count
        if kind == "multilabel":
            values.update(_multilabel_metrics(mean, expected))
        else:
            values.update(_probability_metrics(mean, expected))
            values["variation_ratio"] = 1.0 - stats.votes.max(axis=1) / stats.count
    return {name: values[name] for name in metric_names(kind)}


def failed_metrics(n: int, num_outputs: int, kind: str) -> dict[str, np.ndarray]:
    """Placeholder rows for images that could not be scored.

    Args:
        n: Number of failed images ``N``.
        num_outputs: Number of classes or outputs ``C``.
        kind: ``"probabilities"``, ``"multilabel"`` or ``"values"``.

    Returns:
        Metric name -> array with the shapes of :func:`summarize_passes`: float64 metrics are NaN
        (``[N, C]`` or ``[N]``), ``predicted_class`` is int64 ``-1``.
    """
    result: dict[str, np.ndarray] = {}
    for name in metric_names(kind):
        spec = schema.spec(name)
        shape = (n, *spec.row_shape(num_outputs, 1))
        dtype = np.int64 if spec.dtype == schema.INT else np.float64
        result[name] = np.full(shape, spec.fill_value(), dtype=dtype)
    return result


def finite_rows(values: dict[str, np.ndarray]) -> np.ndarray:
    """bool ``[N]``: rows whose every metric is finite (a NaN or inf output is not a result)."""
    rows = None
    for array in values.values():
        finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        rows = finite if rows is None else rows & finite
    return rows


def _probability_metrics(mean: np.ndarray, expected_entropy: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics of ``mean`` ``[N, C]`` and ``expected_entropy`` ``[N]`` (one distribution)."""
    predictive_entropy = entropy(mean, axis=1)
    mutual_information = np.clip(predictive_entropy - expected_entropy, 0.0, predictive_entropy)
    return {
        "predicted_class": mean.argmax(axis=1).astype(np.int64),
        "confidence": mean.max(axis=1),
        "predictive_entropy": predictive_entropy,
        "expected_entropy": expected_entropy,
        "mutual_information": mutual_information,
    }


def _multilabel_metrics(mean: np.ndarray, expected: np.ndarray) -> dict[str, np.ndarray]:
    """Per-label Bernoulli metrics of ``mean`` and ``expected`` ``[N, C]``, and their sums."""
    label_entropy = bernoulli_entropy(mean)
    label_mi = np.clip(label_entropy - expected, 0.0, label_entropy)
    return {
        "label_entropy": label_entropy,
        "label_expected_entropy": expected,
        "label_mutual_information": label_mi,
        "predictive_entropy": label_entropy.sum(axis=1),
        "expected_entropy": expected.sum(axis=1),
        "mutual_information": label_mi.sum(axis=1),
    }


def _check_has(stats: PassStats, kind: str) -> None:
    shape = stats.total.shape
    if stats.entropy_sum is None or (kind == "probabilities" and stats.votes is None):
        raise ValueError(
            f"metrics for kind {kind!r} need entropy_sum"
            f"{' and votes' if kind == 'probabilities' else ''}, but the stats have none; "
            "compute them with the same kind"
        )
    want = shape[:1] if kind == "probabilities" else shape
    if stats.entropy_sum.shape != want:
        raise ValueError(f"entropy_sum must have shape {want} for kind {kind!r}, "
                         f"got {stats.entropy_sum.shape}")


def _as_passes(passes: np.ndarray) -> np.ndarray:
    """Return ``passes`` as a float64 ``[N, T, C]`` array, or raise ValueError."""
    passes = np.asarray(passes, dtype=np.float64)
    if passes.ndim != 3 or passes.shape[1] < 1 or passes.shape[2] < 1:
        raise ValueError(
            f"passes must have shape [N, T, C] with T >= 1 and C >= 1, got {passes.shape}"
        )
    return passes


def _check_stats(stats: PassStats) -> None:
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
