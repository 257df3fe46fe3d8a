"""Monte Carlo dropout uncertainty metrics, pure numpy.

Axis convention everywhere: per-pass predictions ``passes`` have shape ``[N, T, C]`` (``N`` images,
``T`` stochastic passes, ``C`` classes or outputs). ``kind`` is ``"probabilities"`` (rows that sum
to 1, as from a softmax head), ``"multilabel"`` (``C`` independent sigmoid probabilities, each a
Bernoulli distribution) or ``"values"`` (raw regression outputs, only ``mean`` and ``std``).
Logarithms are natural, so entropies are in nats, and ``0 log 0`` is 0 (see :func:`xlogy`). The
metric names and their order come from :mod:`scorer.results.schema`.

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

import numpy as np

from scorer.metrics.entropy import bernoulli_entropy, entropy
from scorer.metrics.stats import PassStats, as_passes, check_stats
from scorer.results import schema
from scorer.results.schema import check_kind as _check_kind
from scorer.results.schema import metric_names


def summarize_passes(passes: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """Compute every metric straight from the per-pass predictions (the reference computation).

    Metrics for kind ``"probabilities"`` (kind ``"values"`` gives only ``mean`` and ``std``):

    - ``mean`` float64 ``[N, C]``: mean over the ``T`` passes.
    - ``std`` float64 ``[N, C]``: population standard deviation over the passes (divides by ``T``).
    - ``predicted_class`` int64 ``[N]``: argmax of ``mean`` (first class on ties).
    - ``confidence`` float64 ``[N]``: max of ``mean``.
    - ``predictive_entropy`` float64 ``[N]``: ``H[mean]``, total uncertainty.
    - ``normalized_entropy`` float64 ``[N]``: ``H[mean] / log C``, from 0 (certain) to 1 (uniform).
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
    passes = as_passes(passes)
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
    check_stats(stats)
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
    classes = mean.shape[1]
    return {
        "predicted_class": mean.argmax(axis=1).astype(np.int64),
        "confidence": mean.max(axis=1),
        "predictive_entropy": predictive_entropy,
        "normalized_entropy": schema.normalized_entropy(predictive_entropy, classes),
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
