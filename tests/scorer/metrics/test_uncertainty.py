"""Tests for scorer.metrics.uncertainty: hand-computed values plus hypothesis invariants.

Expected values are worked out by hand (or with ``math``), never by the code under test, except
where two independent paths of the module are checked against each other.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scorer.metrics.entropy import entropy, xlogy
from scorer.metrics.stats import PassStats, merge_stats, pass_stats, stats_from_outputs
from scorer.metrics.uncertainty import (
    failed_metrics,
    metric_names,
    metrics_from_stats,
    summarize_passes,
)

LOG2 = math.log(2.0)
TOLERANCE = 1e-9
FLOAT_METRICS = tuple(name for name in metric_names("probabilities") if name != "predicted_class")


@st.composite
def probability_passes(draw: st.DrawFn, min_passes: int = 1) -> np.ndarray:
    """``[N, T, C]`` rows summing to 1, with exact zeros, one-hot rows and ties common."""
    n = draw(st.integers(1, 4))
    t = draw(st.integers(min_passes, 7))
    c = draw(st.integers(1, 5))
    elements = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0.0, 1.0))
    weights = draw(arrays(np.float64, (n, t, c), elements=elements))
    weights[weights.sum(axis=2) == 0, 0] = 1.0
    return weights / weights.sum(axis=2, keepdims=True)


@st.composite
def value_passes(draw: st.DrawFn, min_passes: int = 1) -> np.ndarray:
    """``[N, T, C]`` raw regression outputs."""
    shape = (draw(st.integers(1, 4)), draw(st.integers(min_passes, 7)), draw(st.integers(1, 3)))
    return draw(arrays(np.float64, shape, elements=st.floats(-100.0, 100.0)))


def assert_metrics_close(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        assert actual[name].dtype == value.dtype, name
        np.testing.assert_allclose(actual[name], value, rtol=0, atol=TOLERANCE, err_msg=name)


def assert_stats_close(actual: PassStats, expected: PassStats) -> None:
    assert actual.count == expected.count
    for name in ("total", "m2", "entropy_sum", "votes"):
        a, e = getattr(actual, name), getattr(expected, name)
        if e is None:
            assert a is None, name
        else:
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=TOLERANCE, err_msg=name)


# xlogy and entropy


def test_xlogy_is_zero_where_x_is_zero() -> None:
    result = xlogy(np.array([0.0, 0.0, 2.0, 1.0]), np.array([0.0, 5.0, math.e, 1.0]))
    np.testing.assert_allclose(result, [0.0, 0.0, 2.0, 0.0])
    assert result.dtype == np.float64


def test_xlogy_of_positive_x_and_zero_y_is_minus_infinity() -> None:
    assert xlogy(np.array(1.0), np.array(0.0)) == -np.inf


def test_xlogy_broadcasts() -> None:
    result = xlogy(np.array([[1.0], [0.0]]), np.array([1.0, math.e]))
    np.testing.assert_allclose(result, [[0.0, 1.0], [0.0, 0.0]])


def test_entropy_hand_values() -> None:
    probs = np.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(entropy(probs), [LOG2, 0.0, math.log(4.0)])


def test_entropy_axis() -> None:
    probs = np.array([[0.5, 1.0], [0.5, 0.0]])  # columns are distributions
    np.testing.assert_allclose(entropy(probs, axis=0), [LOG2, 0.0])


# metric names


def test_metric_names() -> None:
    assert metric_names("probabilities") == (
        "mean", "std", "predicted_class", "confidence", "predictive_entropy", "normalized_entropy",
        "expected_entropy",
        "mutual_information", "variation_ratio")
    assert metric_names("values") == ("mean", "std")


def test_unknown_kind_is_rejected() -> None:
    passes = np.full((1, 2, 2), 0.5)
    with pytest.raises(ValueError, match="logits"):
        summarize_passes(passes, "logits")
    with pytest.raises(ValueError, match="logits"):
        metric_names("logits")
    with pytest.raises(ValueError, match="logits"):
        pass_stats(passes, "logits")


@pytest.mark.parametrize("shape", [(2, 3), (1, 0, 3), (1, 2, 0), (1, 2, 3, 4)])
def test_passes_of_wrong_shape_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        summarize_passes(np.zeros(shape), "values")
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        pass_stats(np.zeros(shape), "values")


# hand-computed cases


def test_two_opposite_one_hot_passes() -> None:
    passes = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    metrics = summarize_passes(passes, "probabilities")
    np.testing.assert_allclose(metrics["mean"], [[0.5, 0.5]])
    np.testing.assert_allclose(metrics["std"], [[0.5, 0.5]])
    assert metrics["predicted_class"].tolist() == [0]  # tie: first class
    np.testing.assert_allclose(metrics["confidence"], [0.5])
    np.testing.assert_allclose(metrics["predictive_entropy"], [LOG2])
    np.testing.assert_allclose(metrics["expected_entropy"], [0.0])
    np.testing.assert_allclose(metrics["mutual_information"], [LOG2])
    np.testing.assert_allclose(metrics["variation_ratio"], [0.5])


# Three classes, T = 4 passes of one image:
#   p1 = [1, 0, 0]        H = 0                          argmax 0
#   p2 = [1, 0, 0]        H = 0                          argmax 0
#   p3 = [0, 1, 0]        H = 0                          argmax 1
#   p4 = [.5, .25, .25]   H = .5 log 2 + 2 * .25 log 4   argmax 0
#                           = 1.5 log 2
# mean = [2.5, 1.25, .25] / 4 = [10/16, 5/16, 1/16]   -> predicted class 0, confidence .625
# population variance per class (sum of squared deviations / 4):
#   class 0: [1, 1, 0, .5]   mean .625:   .140625 + .140625 + .390625 + .015625 = .6875 / 4
#   class 1: [0, 0, 1, .25]  mean .3125:  .09765625 * 2 + .47265625 + .00390625 = .671875 / 4
#   class 2: [0, 0, 0, .25]  mean .0625:  .00390625 * 3 + .03515625 = .046875 / 4
# predictive entropy = -(10/16 log 10/16 + 5/16 log 5/16 + 1/16 log 1/16) ~= 0.830524
# expected entropy   = 1.5 log 2 / 4 = .375 log 2                           ~= 0.259930
# mutual information = 0.830524 - 0.259930                                   ~= 0.570593
# variation ratio    = 1 - 3/4 (class 0 is the argmax of 3 passes)            = 0.25
THREE_CLASS_PASSES = np.array([[[1, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0.25, 0.25]]])
THREE_CLASS_PREDICTIVE_ENTROPY = -(
    10 / 16 * math.log(10 / 16) + 5 / 16 * math.log(5 / 16) + 1 / 16 * math.log(1 / 16)
)
THREE_CLASS_EXPECTED = {
    "mean": [[0.625, 0.3125, 0.0625]],
    "std": [[math.sqrt(0.6875 / 4), math.sqrt(0.671875 / 4), math.sqrt(0.046875 / 4)]],
    "predicted_class": [0],
    "confidence": [0.625],
    "predictive_entropy": [THREE_CLASS_PREDICTIVE_ENTROPY],
    "normalized_entropy": [THREE_CLASS_PREDICTIVE_ENTROPY / math.log(3)],  # 0.7559...
    "expected_entropy": [0.375 * LOG2],
    "mutual_information": [THREE_CLASS_PREDICTIVE_ENTROPY - 0.375 * LOG2],
    "variation_ratio": [0.25],
}


def test_three_classes_four_passes_by_hand() -> None:
    assert math.isclose(THREE_CLASS_PREDICTIVE_ENTROPY, 0.8305237, abs_tol=1e-7)
    metrics = summarize_passes(THREE_CLASS_PASSES, "probabilities")
    assert list(metrics) == list(metric_names("probabilities"))
    for name, expected in THREE_CLASS_EXPECTED.items():
        # normalized entropy divides the stored (float32) predictive entropy: float32 accuracy
        atol = 1e-7 if name == "normalized_entropy" else 1e-12
        np.testing.assert_allclose(metrics[name], expected, rtol=0, atol=atol, err_msg=name)


def test_three_classes_four_passes_stats_by_hand() -> None:
    stats = pass_stats(THREE_CLASS_PASSES, "probabilities")
    assert stats.count == 4
    np.testing.assert_allclose(stats.total, [[2.5, 1.25, 0.25]])
    np.testing.assert_allclose(stats.m2, [[0.6875, 0.671875, 0.046875]])
    np.testing.assert_allclose(stats.entropy_sum, [1.5 * LOG2])
    np.testing.assert_array_equal(stats.votes, [[3.0, 1.0, 0.0]])
    metrics = metrics_from_stats(stats, "probabilities")
    for name, expected in THREE_CLASS_EXPECTED.items():
        atol = 1e-7 if name == "normalized_entropy" else 1e-12  # from the float32 entropy
        np.testing.assert_allclose(metrics[name], expected, rtol=0, atol=atol, err_msg=name)


def test_merge_by_hand() -> None:
    # Values [1, 3] and [5]: total 9, mean 3, m2 = 4 + 0 + 4 = 8.
    a = pass_stats(np.array([[[1.0], [3.0]]]), "values")
    b = pass_stats(np.array([[[5.0]]]), "values")
    merged = merge_stats(a, b)
    assert merged.count == 3
    np.testing.assert_allclose(merged.total, [[9.0]])
    np.testing.assert_allclose(merged.m2, [[8.0]])
    assert merged.entropy_sum is None and merged.votes is None


def test_values_by_hand() -> None:
    passes = np.array([[[1.0, -2.0], [3.0, -2.0]], [[0.0, 10.0], [0.0, 20.0]]])
    metrics = summarize_passes(passes, "values")
    assert list(metrics) == ["mean", "std"]
    np.testing.assert_allclose(metrics["mean"], [[2.0, -2.0], [0.0, 15.0]])
    np.testing.assert_allclose(metrics["std"], [[1.0, 0.0], [0.0, 5.0]])


def test_zero_spread_gives_zero_std_and_mutual_information() -> None:
    row = np.array([0.7, 0.2, 0.1])
    passes = np.broadcast_to(row, (2, 5, 3))
    metrics = summarize_passes(passes, "probabilities")
    entropy_of_row = -sum(p * math.log(p) for p in row)
    np.testing.assert_allclose(metrics["std"], 0.0, atol=1e-12)
    np.testing.assert_allclose(metrics["mutual_information"], 0.0, atol=1e-12)
    np.testing.assert_allclose(metrics["predictive_entropy"], entropy_of_row, atol=1e-12)
    np.testing.assert_allclose(metrics["expected_entropy"], entropy_of_row, atol=1e-12)
    np.testing.assert_allclose(metrics["variation_ratio"], 0.0)
    stats_metrics = metrics_from_stats(pass_stats(passes, "probabilities"), "probabilities")
    np.testing.assert_allclose(stats_metrics["std"], 0.0, atol=1e-12)
    np.testing.assert_allclose(stats_metrics["mutual_information"], 0.0, atol=1e-12)


def test_single_pass_has_no_epistemic_uncertainty() -> None:
    passes = np.array([[[0.2, 0.8]]])
    metrics = summarize_passes(passes, "probabilities")
    assert metrics["predicted_class"].tolist() == [1]
    np.testing.assert_allclose(metrics["std"], [[0.0, 0.0]])
    np.testing.assert_allclose(metrics["mutual_information"], [0.0])
    np.testing.assert_allclose(metrics["variation_ratio"], [0.0])


def test_float32_passes_give_float64_metrics() -> None:
    passes = THREE_CLASS_PASSES.astype(np.float32)
    metrics = summarize_passes(passes, "probabilities")
    for name, value in metrics.items():
        expected_dtype = np.int64 if name == "predicted_class" else np.float64
        assert value.dtype == expected_dtype, name
    stats = pass_stats(passes, "probabilities")
    for value in (stats.total, stats.m2, stats.entropy_sum, stats.votes):
        assert value.dtype == np.float64


# graph outputs


def test_stats_from_outputs_casts_to_float64() -> None:
    stats = stats_from_outputs(
        np.int64(4),
        np.array([[2.5, 1.25, 0.25]], dtype=np.float32),
        np.array([[0.6875, 0.671875, 0.046875]], dtype=np.float32),
        np.array([1.5 * LOG2], dtype=np.float32),
        np.array([[3, 1, 0]], dtype=np.float32),
    )
    assert stats.count == 4 and isinstance(stats.count, int)
    for value in (stats.total, stats.m2, stats.entropy_sum, stats.votes):
        assert value.dtype == np.float64
    metrics = metrics_from_stats(stats, "probabilities")
    for name, expected in THREE_CLASS_EXPECTED.items():
        np.testing.assert_allclose(metrics[name], expected, rtol=1e-6, atol=1e-6, err_msg=name)


def test_stats_from_outputs_without_probability_outputs() -> None:
    stats = stats_from_outputs(2, np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32))
    assert stats.entropy_sum is None and stats.votes is None
    assert list(metrics_from_stats(stats, "values")) == ["mean", "std"]
    with pytest.raises(ValueError, match="entropy_sum and votes"):
        metrics_from_stats(stats, "probabilities")


def test_stats_from_outputs_rejects_bad_shapes_and_counts() -> None:
    with pytest.raises(ValueError, match="pass_m2"):
        stats_from_outputs(2, np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="entropy_sum"):
        stats_from_outputs(2, np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(2), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="at least one pass"):
        stats_from_outputs(0, np.zeros((3, 2)), np.zeros((3, 2)))


def test_merge_rejects_mismatched_stats() -> None:
    probs = pass_stats(np.full((2, 3, 2), 0.5), "probabilities")
    with pytest.raises(ValueError, match="shape"):
        merge_stats(probs, pass_stats(np.full((3, 3, 2), 0.5), "probabilities"))
    with pytest.raises(ValueError, match="votes|entropy_sum"):
        merge_stats(probs, pass_stats(np.full((2, 3, 2), 0.5), "values"))


# failed rows


@pytest.mark.parametrize("n", [0, 3])
def test_failed_metrics_probabilities(n: int) -> None:
    metrics = failed_metrics(n, 4, "probabilities")
    assert list(metrics) == list(metric_names("probabilities"))
    for name in ("mean", "std"):
        assert metrics[name].shape == (n, 4) and metrics[name].dtype == np.float64
        assert np.isnan(metrics[name]).all()
    assert metrics["predicted_class"].shape == (n,)
    assert metrics["predicted_class"].dtype == np.int64
    assert (metrics["predicted_class"] == -1).all()
    for name in FLOAT_METRICS[2:]:
        assert metrics[name].shape == (n,) and metrics[name].dtype == np.float64
        assert np.isnan(metrics[name]).all()


def test_failed_metrics_values() -> None:
    metrics = failed_metrics(2, 5, "values")
    assert list(metrics) == ["mean", "std"]
    for value in metrics.values():
        assert value.shape == (2, 5) and value.dtype == np.float64
        assert np.isnan(value).all()


def test_failed_metrics_match_scored_shapes() -> None:
    scored = summarize_passes(np.full((3, 2, 4), 0.25), "probabilities")
    failed = failed_metrics(3, 4, "probabilities")
    for name in metric_names("probabilities"):
        assert failed[name].shape == scored[name].shape
        assert failed[name].dtype == scored[name].dtype


# hypothesis invariants


@given(probability_passes())
def test_uncertainty_bounds(passes: np.ndarray) -> None:
    metrics = summarize_passes(passes, "probabilities")
    log_c = math.log(passes.shape[2])
    mutual_information = metrics["mutual_information"]
    predictive_entropy = metrics["predictive_entropy"]
    expected_entropy = metrics["expected_entropy"]
    assert (mutual_information >= 0).all()
    assert (mutual_information <= predictive_entropy).all()
    assert (predictive_entropy <= log_c + 1e-12).all()
    normalized = metrics["normalized_entropy"]
    assert (normalized >= 0).all() and (normalized <= 1 + 1e-12).all()
    assert (expected_entropy >= 0).all()
    assert (expected_entropy <= log_c + 1e-12).all()
    np.testing.assert_allclose(
        mutual_information, predictive_entropy - expected_entropy, rtol=0, atol=1e-12
    )
    variation_ratio = metrics["variation_ratio"]
    assert (variation_ratio >= 0).all()
    assert (variation_ratio <= 1 - 1 / passes.shape[2] + 1e-12).all()
    assert (metrics["std"] >= 0).all() and (metrics["std"] <= 0.5 + 1e-12).all()
    np.testing.assert_allclose(metrics["mean"].sum(axis=1), 1.0, atol=1e-12)
    confidence = metrics["confidence"]
    assert (confidence >= 1 / passes.shape[2] - 1e-12).all() and (confidence <= 1 + 1e-12).all()
    rows = np.arange(passes.shape[0])
    assert (metrics["mean"][rows, metrics["predicted_class"]] == confidence).all()


@given(probability_passes())
def test_metrics_from_stats_match_reference_probabilities(passes: np.ndarray) -> None:
    stats = pass_stats(passes, "probabilities")
    assert_metrics_close(
        metrics_from_stats(stats, "probabilities"), summarize_passes(passes, "probabilities")
    )


@given(value_passes())
def test_metrics_from_stats_match_reference_values(passes: np.ndarray) -> None:
    stats = pass_stats(passes, "values")
    assert stats.entropy_sum is None and stats.votes is None
    assert_metrics_close(metrics_from_stats(stats, "values"), summarize_passes(passes, "values"))


@given(probability_passes())
def test_rows_are_independent(passes: np.ndarray) -> None:
    metrics = summarize_passes(passes, "probabilities")
    for row in range(passes.shape[0]):
        single = summarize_passes(passes[row : row + 1], "probabilities")
        for name in metric_names("probabilities"):
            np.testing.assert_allclose(single[name][0], metrics[name][row], atol=1e-12)


@given(probability_passes(), st.randoms(use_true_random=False))
def test_pass_order_does_not_matter(passes: np.ndarray, random) -> None:
    order = list(range(passes.shape[1]))
    random.shuffle(order)
    reference = summarize_passes(passes, "probabilities")
    shuffled = summarize_passes(passes[:, order], "probabilities")
    for name in FLOAT_METRICS:
        np.testing.assert_allclose(shuffled[name], reference[name], atol=1e-12, err_msg=name)


@st.composite
def passes_and_split(draw: st.DrawFn, kind: str) -> tuple[np.ndarray, int]:
    strategy = probability_passes if kind == "probabilities" else value_passes
    passes = draw(strategy(min_passes=2))
    return passes, draw(st.integers(1, passes.shape[1] - 1))


@pytest.mark.parametrize("kind", ["probabilities", "values"])
@settings(deadline=None)
@given(data=st.data())
def test_merge_of_any_split_equals_whole(kind: str, data: st.DataObject) -> None:
    passes, split = data.draw(passes_and_split(kind))
    merged = merge_stats(pass_stats(passes[:, :split], kind), pass_stats(passes[:, split:], kind))
    whole = pass_stats(passes, kind)
    assert_stats_close(merged, whole)
    metrics = metrics_from_stats(merged, kind)
    reference = summarize_passes(passes, kind)
    for name in ("mean", "std") if kind == "values" else FLOAT_METRICS:
        np.testing.assert_allclose(metrics[name], reference[name], atol=TOLERANCE, err_msg=name)


@given(probability_passes(min_passes=3), st.data())
def test_merge_of_many_chunks_equals_whole(passes: np.ndarray, data: st.DataObject) -> None:
    cuts = data.draw(st.sets(st.integers(1, passes.shape[1] - 1), min_size=1))
    bounds = [0, *sorted(cuts), passes.shape[1]]
    chunks = [passes[:, start:stop] for start, stop in itertools.pairwise(bounds)]
    merged = pass_stats(chunks[0], "probabilities")
    for chunk in chunks[1:]:
        merged = merge_stats(merged, pass_stats(chunk, "probabilities"))
    assert_stats_close(merged, pass_stats(passes, "probabilities"))
    # Summing in another order may break a near-tie differently; the pick must still be a maximum.
    reference = summarize_passes(passes, "probabilities")
    picked = metrics_from_stats(merged, "probabilities")["predicted_class"]
    rows = np.arange(passes.shape[0])
    np.testing.assert_allclose(
        reference["mean"][rows, picked], reference["confidence"], atol=TOLERANCE
    )
