"""scorer.report.numbers against hand-computed cases, brute-force loops and scikit-learn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from report_support import (
    brute_accuracy_at,
    brute_aurc,
    brute_ece,
    brute_fpr_at_tpr,
    brute_ood_flagged,
)
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from scorer.report import numbers


def random_case(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    if ties:
        scores = np.round(scores, 1)
    positives = rng.random(n) < rng.uniform(0.1, 0.6)
    positives[:2] = [True, False]
    return scores, positives


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_average_precision_equal_scikit_learn(seed: int, ties: bool) -> None:
    scores, positives = random_case(seed, 50 + 37 * seed, ties)
    assert numbers.roc_auc(scores, positives) == pytest.approx(roc_auc_score(positives, scores),
                                                               abs=1e-12)
    assert numbers.average_precision(scores, positives) == pytest.approx(
        average_precision_score(positives, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_fpr_at_95_tpr_equals_brute_force_and_roc_curve(seed: int, ties: bool) -> None:
    scores, positives = random_case(seed, 40 + 25 * seed, ties)
    expected = brute_fpr_at_tpr(scores.tolist(), positives.tolist())
    assert numbers.fpr_at_tpr(scores, positives) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, _ = roc_curve(positives, scores, drop_intermediate=False)
    assert numbers.fpr_at_tpr(scores, positives) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_ranking_hand_case() -> None:
    # positives score 0.9 and 0.4, negatives 0.8, 0.4, 0.1: pairs won 1 + 0 + 1 (pos 0.9) ...
    scores = np.array([0.9, 0.8, 0.4, 0.4, 0.1])
    positives = np.array([True, False, True, False, False])
    # pairs (pos, neg): (0.9: 3 wins), (0.4: loses to 0.8, ties 0.4, beats 0.1) -> (3 + 1.5) / 6
    assert numbers.roc_auc(scores, positives) == pytest.approx(4.5 / 6)
    # thresholds 0.9 (P=1, R=.5), 0.8 (P=.5, R=.5), 0.4 (P=2/4, R=1): AP = .5 * 1 + .5 * .5
    assert numbers.average_precision(scores, positives) == pytest.approx(0.75)
    # TPR reaches 0.95 only at threshold 0.4, where 2 of 3 negatives are flagged
    assert numbers.fpr_at_tpr(scores, positives) == pytest.approx(2 / 3)


def test_ranking_without_both_classes_is_none() -> None:
    scores = np.array([0.1, 0.2])
    for function in (numbers.roc_auc, numbers.average_precision, numbers.fpr_at_tpr):
        assert function(scores, np.array([True, True])) is None
        assert function(scores, np.array([False, False])) is None


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        numbers.roc_auc(np.array([0.1, np.nan]), np.array([True, False]))


def test_ece_hand_case() -> None:
    confidence = np.array([1.0, 0.95, 0.94, 0.5, 0.52])
    correct = np.array([True, True, False, True, False])
    # bin 14 (14/15, 1]: 3 rows, accuracy 2/3, confidence 0.963333; bin 7 (7/15, 8/15]: 2 rows,
    # accuracy 1/2, confidence 0.51 -> 3/5 * 0.296667 + 2/5 * 0.01
    result = numbers.calibration(confidence, correct)
    assert result.ece == pytest.approx(0.182)
    assert result.counts[14] == 3 and result.counts[7] == 2 and result.counts.sum() == 5
    assert result.accuracy[14] == pytest.approx(2 / 3)
    assert result.confidence[7] == pytest.approx(0.51)
    assert len(result.edges) == 16 and np.isnan(result.accuracy[0])


def test_ece_bin_edges_are_right_closed() -> None:
    # 0.4 = 6/15 belongs to bin 5 (1/3, 0.4], 0 to bin 0, 1 to bin 14
    result = numbers.calibration(np.array([0.0, 0.4, 1.0]), np.array([True, False, True]))
    assert result.counts[0] == 1 and result.counts[5] == 1 and result.counts[14] == 1
    assert result.ece == pytest.approx(brute_ece([0.0, 0.4, 1.0], [True, False, True]))


@pytest.mark.parametrize("seed", range(10))
def test_ece_equals_brute_force_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 30 + 40 * seed
    confidence = rng.uniform(0.1, 1.0, n)
    confidence[:3] = [1.0, 2 / 15, 0.5]
    correct = rng.random(n) < confidence
    assert numbers.calibration(confidence, correct).ece == pytest.approx(
        brute_ece(confidence.tolist(), correct.tolist()), abs=1e-12)


def test_aurc_hand_cases() -> None:
    # no ties: risks 0, 1/2, 1/3, 2/4
    risk = numbers.risk_coverage(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 1, 0], bool))
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3, 1 / 2])
    assert numbers.aurc(risk) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    assert numbers.accuracy_at_coverage(risk, 0.5) == pytest.approx(0.5)
    assert numbers.accuracy_at_coverage(risk, 0.75) == pytest.approx(2 / 3)
    assert numbers.accuracy_at_coverage(risk, 0.8) == pytest.approx(0.5)  # ceil(3.2) = 4 kept
    # a tie of one correct and one wrong row: orders give risks (0, 0, 1/3, 1/2) and
    # (0, 1/2, 1/3, 1/2); the expectation is their mean
    risk = numbers.risk_coverage(np.array([0.1, 0.2, 0.2, 0.4]), np.array([1, 1, 0, 0], bool))
    np.testing.assert_allclose(risk, [0, 1 / 4, 1 / 3, 1 / 2])
    assert numbers.aurc(risk) == pytest.approx((0 + 1 / 4 + 1 / 3 + 1 / 2) / 4)


def test_aurc_with_ties_is_the_mean_over_tie_orders() -> None:
    uncertainty = np.array([0.3, 0.1, 0.3, 0.2, 0.3, 0.1, 0.5])
    correct = np.array([0, 1, 1, 0, 1, 0, 1], bool)
    orders = [p for p in itertools.permutations(range(7))
              if all(uncertainty[p[i]] <= uncertainty[p[i + 1]] for i in range(6))]
    per_order = [np.mean(np.cumsum(~correct[list(p)]) / np.arange(1, 8)) for p in orders]
    assert numbers.aurc(numbers.risk_coverage(uncertainty, correct)) == pytest.approx(np.mean(per_order))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("ties", [False, True])
def test_aurc_and_coverage_accuracy_equal_brute_force(seed: int, ties: bool) -> None:
    scores, wrong = random_case(seed, 20 + 30 * seed, ties)
    correct = ~wrong
    risk = numbers.risk_coverage(scores, correct)
    assert numbers.aurc(risk) == pytest.approx(brute_aurc(scores.tolist(), correct.tolist()), abs=1e-12)
    for coverage in (0.9, 0.8, 0.5):
        assert numbers.accuracy_at_coverage(risk, coverage) == pytest.approx(
            brute_accuracy_at(scores.tolist(), correct.tolist(), coverage), abs=1e-12)


def test_aurc_of_a_perfect_ranking_is_the_oracle_value() -> None:
    # errors are the most uncertain: risk is 0 until the errors are kept
    uncertainty = np.arange(10.0)
    correct = uncertainty < 7
    risk = numbers.risk_coverage(uncertainty, correct)
    assert numbers.aurc(risk) == pytest.approx((1 / 8 + 2 / 9 + 3 / 10) / 10)


def test_flag_split_hand_case() -> None:
    uncertainty = np.array([0.9, 0.8, 0.8, 0.1, 0.2])
    correct = np.array([0, 1, 0, 1, 1], bool)
    one = numbers.flag_split(uncertainty, correct, 0.2)
    assert (one.threshold, one.flagged, one.accuracy_flagged, one.accuracy_rest) == (0.9, 1, 0.0, 0.75)
    tied = numbers.flag_split(uncertainty, correct, 0.4)  # the tie at 0.8 flags three rows
    assert (tied.threshold, tied.flagged) == (0.8, 3)
    assert tied.accuracy_flagged == pytest.approx(1 / 3) and tied.accuracy_rest == 1.0


def test_ood_flagging_hand_case_and_brute_force() -> None:
    in_scores = np.arange(1, 11) / 10
    ood_scores = np.array([0.5, 1.0, 1.5, 2.0])
    keep_all = numbers.ood_flagging(in_scores, ood_scores, 0.95)  # ceil(9.5) = 10th score
    assert (keep_all.threshold, keep_all.in_kept, keep_all.ood_flagged) == (1.0, 1.0, 0.5)
    most = numbers.ood_flagging(in_scores, ood_scores, 0.8)
    assert (most.threshold, most.in_kept, most.ood_flagged) == (0.8, 0.8, 0.75)
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = np.round(rng.random(83), 2), np.round(rng.random(31) + 0.3, 2)
        assert numbers.ood_flagging(a, b).ood_flagged == pytest.approx(
            brute_ood_flagged(a.tolist(), b.tolist()))
    assert numbers.ood_flagging(in_scores, np.zeros(0)) is None


def test_empty_inputs() -> None:
    empty = np.zeros(0)
    assert numbers.calibration(empty, empty.astype(bool)) is None
    assert numbers.aurc(numbers.risk_coverage(empty, empty.astype(bool))) is None
    assert numbers.flag_split(empty, empty.astype(bool), 0.1) is None
    assert numbers.quantiles(empty) is None


def test_downsample_keeps_both_ends() -> None:
    index, values = numbers.downsample(np.arange(10_000.0), points=50)
    assert index[0] == 0 and index[-1] == 9999 and len(index) <= 50
    np.testing.assert_array_equal(values, index)
