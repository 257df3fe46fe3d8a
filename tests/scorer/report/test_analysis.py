"""The report's numbers on every head kind, against independent computations from the raw file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from paths import DOCS
from report_support import (
    assert_summary_matches,
    expected_summary,
    fail_rows,
    multilabel_file,
    synthetic_probabilities,
    write_results,
)
from sklearn.metrics import roc_auc_score

from scorer.report import ReportOptions, load, write_report
from scorer.report.columns import read_table
from scorer.report.load import ResultsReader

REPORT_DOCS = (DOCS / "report.md").read_text(encoding="utf-8")


def numbers_of(path: Path, **options) -> dict:
    options.setdefault("ood_labels", ("ood",))
    return write_report(path, None, ReportOptions(write_html=False, **options)).numbers


def test_probabilities_numbers_equal_independent_computations(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=500, classes=4)
    numbers = numbers_of(path)
    assert_summary_matches(numbers, expected_summary(path))
    assert numbers["ood"]["in_distribution"] + numbers["ood"]["ood"] == numbers["results"]["scored"]


def test_numbers_do_not_depend_on_the_row_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=300, classes=5)
    whole = numbers_of(path)
    monkeypatch.setattr(load, "CHUNK_BYTES", 8 * 5 * 7)  # 7 rows a slice
    assert numbers_of(path) == whole


def test_counts_labels_and_failures(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=300)
    with h5py.File(path, "r") as raw:
        status = np.array(raw["status"].asstr()[:], dtype=object)
        label = np.array(raw["label"].asstr()[:], dtype=object)
    numbers = numbers_of(path)
    reasons, counts = np.unique(status[status != "ok"], return_counts=True)
    assert numbers["failures"] == dict(zip(reasons.tolist(), counts.tolist(), strict=True))
    assert numbers["results"]["failed"] == int((status != "ok").sum())
    assert numbers["labels"]["ood"] == int(((label == "ood") & (status == "ok")).sum())
    assert numbers["labels"]["class"] == numbers["classification"]["images"]
    json.dumps(numbers, allow_nan=False)  # strict JSON: no NaN anywhere


def test_labels_that_are_not_classes_are_reported_as_other(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=200)
    numbers = numbers_of(path, ood_labels=())
    assert numbers["ood"] is None
    assert numbers["labels"]["other_labels"] == {"ood": numbers["labels"]["other"]}
    missing = numbers_of(path, ood_labels=("ood", "other"))
    assert missing["labels"]["ood_labels_missing"] == ["other"]


def test_decimal_labels_are_classes_without_class_names(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=200, classes=3)
    with h5py.File(path, "a") as raw:
        labels = [{"c0": "0", "c1": "1", "c2": "2"}.get(x, x) for x in raw["label"].asstr()[:]]
        del raw["label"], raw.attrs["class_names"]
        raw.create_dataset("label", data=labels, dtype=h5py.string_dtype())
    named = numbers_of(synthetic_probabilities(tmp_path / "named.h5", n=200, classes=3))
    numbers = numbers_of(path)
    assert numbers["classification"] == named["classification"]
    assert [o["name"] for o in numbers["outputs"]] == ["output 0", "output 1", "output 2"]


def test_rows_beyond_rows_complete_are_ignored(tmp_path: Path) -> None:
    full = synthetic_probabilities(tmp_path / "full.h5", n=120, seed=4)
    prefix = synthetic_probabilities(tmp_path / "prefix.h5", n=120, seed=4, rows_complete=80)
    numbers = numbers_of(prefix)
    assert numbers["results"]["rows"] == 80
    assert_summary_matches(numbers, expected_summary(prefix))
    assert numbers != numbers_of(full)


def test_scatter_is_sampled_above_max_points(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=400)
    everything = numbers_of(path)
    sampled = numbers_of(path, max_points=50)
    assert sampled["scatter"] == {"rows_shown": 50, "rows_total": everything["results"]["scored"]}
    assert everything["scatter"]["rows_shown"] == everything["results"]["scored"]
    for key in ("classification", "selective", "ood", "distributions"):
        assert sampled[key] == everything[key], key


def test_binary_sigmoid_scatter_shows_the_positive_class(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=100, classes=2, head="sigmoid")
    with h5py.File(path, "r") as raw:
        ok = raw["status"].asstr()[:] == "ok"
        mean, std = raw["mean"][:][ok], raw["std"][:][ok]
    with ResultsReader(path) as reader:
        table = read_table(reader)
    np.testing.assert_allclose(table.scatter.x, mean[:, 1])
    np.testing.assert_allclose(table.scatter.y, std[:, 1])
    html = write_report(path, tmp_path / "r.html", ReportOptions()).html_path.read_text()
    assert "Binary sigmoid head: std of P(positive class)" in html


def test_multilabel_sections(tmp_path: Path) -> None:
    path = multilabel_file(tmp_path / "m.h5")
    numbers = numbers_of(path)
    with h5py.File(path, "r") as raw:
        ok = raw["status"].asstr()[:] == "ok"
        label = np.array(raw["label"].asstr()[:], dtype=object)
        mean, label_mi = raw["mean"][:][ok], raw["label_mutual_information"][:][ok]
        mi = raw["mutual_information"][:]
    assert numbers["classification"] is None and numbers["selective"] is None
    assert sorted(numbers["distributions"]) == ["expected_entropy", "mutual_information",
                                                "predictive_entropy", "std"]
    for c, row in enumerate(numbers["outputs"]):
        assert row["name"] == f"tag{c}"
        assert row["mean"] == pytest.approx(mean[:, c].mean(), rel=1e-6)
        assert row["share_above_half"] == pytest.approx((mean[:, c] > 0.5).mean())
        assert row["mean_label_mi"] == pytest.approx(label_mi[:, c].mean(), rel=1e-6)
    scored = ok & np.isin(label, ["ood", "photos"])
    assert numbers["ood"]["measures"]["mutual_information"]["auroc"] == pytest.approx(
        roc_auc_score(label[scored] == "ood", mi[scored]))
    assert "max_probability" not in numbers["ood"]["measures"]


def test_values_sections(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (60, 9, 3))
    columns = {"mean": values.mean(axis=1), "std": values.std(axis=1)}
    failed = np.arange(60) % 10 == 0
    fail_rows(columns, failed)
    columns.update(path=[f"{i}.png" for i in range(60)],
                   status=np.where(failed, "unreadable", "ok").tolist())
    path = write_results(tmp_path / "v.h5", columns, kind="values", passes=9)
    numbers = numbers_of(path, ood_labels=())
    std = columns["std"][~failed].astype(np.float32).astype(np.float64)
    assert numbers["distributions"]["std"]["mean"] == pytest.approx(std.mean(axis=1).mean(), rel=1e-6)
    assert [o["mean_std"] for o in numbers["outputs"]] == pytest.approx(std.mean(axis=0), rel=1e-6)
    assert numbers["failures"] == {"unreadable": 6}
    assert numbers["classification"] is None and numbers["ood"] is None
    html = write_report(path, tmp_path / "v.html", ReportOptions()).html_path.read_text()
    assert "Per output" in html and "The file has no labels" in html and "Ordered by std" in html


def only_failed_file(path: Path) -> Path:
    nan = np.full(3, np.nan)
    columns = {"mean": np.full((3, 2), np.nan), "std": np.full((3, 2), np.nan),
               "predicted_class": np.full(3, -1), **{name: nan.copy() for name in (
                   "confidence", "predictive_entropy", "expected_entropy", "mutual_information",
                   "variation_ratio")},
               "path": ["a/1.jpg", "a/2.jpg", "b/3.jpg"], "label": ["a", "a", "b"],
               "status": ["truncated", "not an image", "truncated"]}
    return write_results(path, columns, kind="probabilities", class_names=["a", "b"])


@pytest.mark.parametrize("rows", [3, 0])
def test_a_file_without_scored_rows(tmp_path: Path, rows: int) -> None:
    path = only_failed_file(tmp_path / "f.h5")
    if rows == 0:
        with h5py.File(path, "a") as raw:
            raw.attrs["rows_complete"] = 0
    summary = write_report(path, tmp_path / "f.html", ReportOptions(ood_labels=("ood",)))
    numbers = summary.numbers
    assert numbers["results"]["scored"] == 0 and numbers["results"]["rows"] == rows
    assert numbers["failures"] == ({"truncated": 2, "not an image": 1} if rows else {})
    assert all(v is None for v in numbers["distributions"].values())
    assert numbers["classification"] is None and numbers["ood"] is None
    html = (tmp_path / "f.html").read_text()
    assert ("a/1.jpg" in html) == bool(rows) and "Definitions" in html


def test_json_keys_are_documented_in_the_report_page(tmp_path: Path) -> None:
    """Every key path of full probabilities and multi-label summaries is in docs/report.md's table."""
    numbers = numbers_of(synthetic_probabilities(tmp_path / "r.h5", n=200))
    multilabel = numbers_of(multilabel_file(tmp_path / "m.h5"))
    measures = set(numbers["selective"])
    variable = {"failures": "<reason>", "other_labels": "<label>"}

    def paths(value, prefix: str, parent: str):
        if isinstance(value, dict):
            for key, item in value.items():
                name = "<measure>" if key in measures else variable.get(parent, key)
                yield from paths(item, f"{prefix}.{name}" if prefix else name, key)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value[:1]:
                yield from paths(item, prefix + "[]", parent)
        else:
            yield prefix

    keys = {p for p in paths(numbers, "", "")} | {p for p in paths(multilabel, "", "")}
    assert "outputs[].share_above_half" in keys and "ood.measures.<measure>.auroc" in keys
    missing = sorted(key for key in keys if f"`{key}`" not in REPORT_DOCS)
    assert not missing, f"summary keys not documented in docs/report.md: {missing}"


def test_accuracy_at_coverage_keys_cover_the_issue_levels(tmp_path: Path) -> None:
    numbers = numbers_of(synthetic_probabilities(tmp_path / "r.h5", n=100))
    keys = set(numbers["selective"]["mutual_information"])
    assert {f"accuracy_at_coverage_{c}" for c in (90, 80, 50)} <= keys
    assert numbers["classification"]["ece_bins"] == 15
    assert len(numbers["classification"]["reliability"]) == 15
    assert math.isclose(numbers["classification"]["reliability"][-1]["upper"], 1.0)


def test_a_damaged_file_does_not_crash(tmp_path: Path) -> None:
    """An ok row with a NaN measure and an out-of-range class index: reported, not a crash."""
    path = synthetic_probabilities(tmp_path / "r.h5", n=120)
    with h5py.File(path, "a") as raw:
        ok = np.flatnonzero(raw["status"].asstr()[:] == "ok")
        mi = raw["mutual_information"][:]
        mi[ok[0]] = np.nan
        raw["mutual_information"][...] = mi
        predicted = raw["predicted_class"][:]
        predicted[ok[1]] = 99
        raw["predicted_class"][...] = predicted
    summary = write_report(path, tmp_path / "r.html", ReportOptions(ood_labels=("ood",)))
    numbers = summary.numbers
    assert numbers["selective"]["mutual_information"]["aurc"] is not None
    assert numbers["ood"]["measures"]["mutual_information"]["auroc"] is not None
    json.dumps(numbers, allow_nan=False)


def test_failure_details_from_the_reason_dataset(tmp_path: Path) -> None:
    path = only_failed_file(tmp_path / "f.h5")
    with h5py.File(path, "a") as raw:
        raw.create_dataset("reason", data=["cut after 812 bytes", "PDF document", ""],
                           dtype=h5py.string_dtype())
    write_report(path, tmp_path / "f.html", ReportOptions())
    html = (tmp_path / "f.html").read_text()
    assert "a/1.jpg (cut after 812 bytes)" in html and "a/2.jpg (PDF document)" in html
