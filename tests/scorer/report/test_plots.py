"""scorer.plots: the report's figures and numbers for predictions in memory; the HTML report draws
with the same functions. Numbers are checked against computations made here with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from paths import REGRESSION
from scorer_support import digit_images

import scorer
from scorer import plots
from scorer.report import ReportOptions, write_report
from scorer.report.errors import ReportUsageError

MODEL = REGRESSION / "model.onnx"  # the 16x16 digits CNN, classes "0" .. "9"


@pytest.fixture(scope="module")
def scored():
    """Forty labelled digits and ten noise images labelled ``noise``."""
    pixels, digits = digit_images()
    noise = np.random.default_rng(0).integers(0, 256, (10, 16, 16), dtype=np.uint8)
    images = np.concatenate([pixels[:40], noise])
    labels = [str(d) for d in digits[:40]] + ["noise"] * 10
    return images, labels, scorer.predict(MODEL, images, 20, seed=1, device="cpu", labels=labels)


def test_std_vs_probability_draws_each_image_s_predicted_class(scored):
    _, _, predictions = scored
    figure = plots.std_vs_probability(predictions, ood_labels=("noise",))
    assert isinstance(figure, Figure)
    points = np.concatenate([c.get_offsets() for c in figure.axes[0].collections])
    rows = np.arange(predictions.rows)
    expected = np.column_stack([predictions["confidence"],
                                predictions["std"][rows, predictions["predicted_class"]]])
    np.testing.assert_allclose(sorted(map(tuple, points)), sorted(map(tuple, expected)), rtol=1e-6)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert set(legend) <= {"correct", "wrong", "OOD"} and "OOD" in legend


def test_threshold_split_counts_and_accuracies(scored):
    _, labels, predictions = scored
    split = plots.threshold_split(predictions, "mutual_information", 0.3)
    labelled = np.array([label != "noise" for label in labels])
    mi = predictions["mutual_information"][labelled]
    correct = (predictions["predicted_class"][labelled]
               == np.array([int(label) for label in labels if label != "noise"]))
    assert split.flagged == int((mi >= 0.3).sum())
    assert split.accuracy_flagged == pytest.approx(correct[mi >= 0.3].mean())
    assert split.accuracy_rest == pytest.approx(correct[mi < 0.3].mean())


def test_histograms_split_by_group(scored):
    _, labels, predictions = scored
    figure = plots.histogram(predictions, "normalized_entropy", ood_labels=("noise",))
    drawn = {line.get_label().split(" (")[0]: line for line in figure.axes[0].patches}
    assert set(drawn) == {"in-distribution", "OOD"}
    ood = np.array(labels) == "noise"
    values = predictions["normalized_entropy"]
    np.testing.assert_allclose(values, predictions["predictive_entropy"] / np.log(10), rtol=1e-6)
    edges = drawn["OOD"].get_data().edges
    counts = np.histogram(values[ood], edges)[0]
    np.testing.assert_allclose(drawn["OOD"].get_data().values, counts / counts.sum())
    assert isinstance(plots.histogram(predictions, "mutual_information"), Figure)  # correct/wrong
    with pytest.raises(ReportUsageError, match="no histogram of 'nope'"):
        plots.histogram(predictions, "nope")


def test_reliability_and_rejection_need_class_labels(scored):
    images, _, predictions = scored
    assert isinstance(plots.reliability(predictions), Figure)
    assert isinstance(plots.rejection(predictions), Figure)
    unlabelled = scorer.predict(MODEL, images[:5], 5, device="cpu")
    with pytest.raises(ReportUsageError, match="labels"):
        plots.reliability(unlabelled)
    with pytest.raises(ReportUsageError, match="labels"):
        plots.threshold_split(unlabelled, "mutual_information", 0.1)


def test_image_grid_shows_the_most_uncertain_images_from_the_array(scored):
    images, _, predictions = scored
    figure = plots.image_grid(images, predictions, "mutual_information", count=6)
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 6
    top = np.argsort(-predictions["mutual_information"], kind="stable")[:6]
    for ax, row in zip(shown, top, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), images[row])
        assert f"{predictions['mutual_information'][row]:.3f}" in ax.get_title()
    with pytest.raises(ReportUsageError, match="give the array the predictions were made on"):
        plots.image_grid(images[:3], predictions)


def test_the_html_report_draws_with_the_same_functions(scored, tmp_path, monkeypatch):
    _, _, predictions = scored
    called = []
    for name in ("std_vs_probability", "histogram", "reliability", "rejection"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, real=real, name=name, **k:
                            called.append(name) or real(*a, **k))
    write_report(predictions.save(tmp_path / "p.h5"), tmp_path / "p.html",
                 ReportOptions(ood_labels=("noise",)))
    assert {"std_vs_probability", "histogram", "reliability", "rejection"} <= set(called)


def test_a_results_file_works_as_a_source(scored, tmp_path):
    _, _, predictions = scored
    path = predictions.save(tmp_path / "p.h5")
    from_file = plots.threshold_split(path, "mutual_information", 0.3)
    assert from_file == plots.threshold_split(predictions, "mutual_information", 0.3)
