"""Synthetic results files for the report tests, written with h5py in the documented layout
(schema 1: flat datasets, JSON attributes listed in ``json_attrs``; schema 2 with ``class_dataset``).

The metric columns are computed here from made-up per-pass outputs with plain numpy; they are
the report's input, never its expected output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

FAILURES = ("unreadable", "truncated", "not an image")


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def _bernoulli(p: np.ndarray) -> np.ndarray:
    return _entropy(np.stack([p, 1 - p], axis=-1))


def passes_probabilities(rng: np.random.Generator, n: int, classes: int, passes: int,
                         truth: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``[n, T, C]`` softmax outputs leaning towards ``truth`` with per-row logit ``noise``."""
    logits = rng.normal(0, 1, (n, 1, classes)) + rng.normal(0, 1, (n, passes, classes)) * noise[:, None, None]
    logits[np.arange(n), :, truth] += 2.5
    logits -= logits.max(axis=2, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)


def probability_columns(per_pass: np.ndarray) -> dict[str, np.ndarray]:
    """The per-row metrics of the results schema from ``[n, T, C]`` probabilities."""
    mean = per_pass.mean(axis=1)
    predictive = _entropy(mean)
    expected = _entropy(per_pass).mean(axis=1)
    votes = np.apply_along_axis(np.bincount, 1, per_pass.argmax(axis=2), minlength=per_pass.shape[2])
    return {"mean": mean, "std": per_pass.std(axis=1), "predicted_class": mean.argmax(axis=1),
            "confidence": mean.max(axis=1), "predictive_entropy": predictive,
            "expected_entropy": expected,
            "mutual_information": np.clip(predictive - expected, 0, None),
            "variation_ratio": 1 - votes.max(axis=1) / per_pass.shape[1]}


def multilabel_columns(per_pass: np.ndarray) -> dict[str, np.ndarray]:
    """Multi-label metrics from ``[n, T, C]`` independent sigmoid probabilities."""
    mean = per_pass.mean(axis=1)
    label_entropy = _bernoulli(mean)
    label_expected = _bernoulli(per_pass).mean(axis=1)
    label_mi = np.clip(label_entropy - label_expected, 0, None)
    return {"mean": mean, "std": per_pass.std(axis=1), "label_entropy": label_entropy,
            "label_expected_entropy": label_expected, "label_mutual_information": label_mi,
            "predictive_entropy": label_entropy.sum(axis=1),
            "expected_entropy": label_expected.sum(axis=1),
            "mutual_information": label_mi.sum(axis=1)}


def fail_rows(columns: dict[str, np.ndarray], failed: np.ndarray) -> None:
    """Set the metrics of ``failed`` rows as the scorer does: NaN, -1 for the predicted class."""
    for name, values in columns.items():
        if name == "predicted_class":
            values[failed] = -1
        elif values.dtype.kind == "f":
            values[failed] = np.nan


def write_results(path: Path, columns: dict[str, np.ndarray | list[str]], *, kind: str,
                  passes: int = 20, class_names: list[str] | None = None, images_root: str = "",
                  rows_complete: int | None = None, class_dataset: bool = False,
                  head: str | None = None) -> Path:
    """Write ``columns`` as root datasets (strings as UTF-8) and the root attributes."""
    with h5py.File(path, "w") as file:
        for name, values in columns.items():
            if isinstance(values, list) or np.asarray(values).dtype.kind in "OUS":
                file.create_dataset(name, data=[str(v) for v in values],
                                    dtype=h5py.string_dtype("utf-8"))
            else:
                values = np.asarray(values)
                dtype = np.int64 if values.dtype.kind in "iu" else np.float32
                file.create_dataset(name, data=values.astype(dtype), chunks=True)
        num_outputs = np.asarray(columns["mean"]).shape[1] if "mean" in columns else 0
        file.attrs.update({"schema_version": 2 if class_dataset else 1, "kind": kind,
                           "num_outputs": num_outputs, "passes": passes,
                           "has_labels": "label" in columns, "images_root": images_root,
                           "rows_complete": len(columns["path"]) if rows_complete is None
                           else rows_complete})
        json_attrs = []
        if class_dataset and class_names:
            file.create_dataset("class", data=class_names, dtype=h5py.string_dtype("utf-8"))
        elif class_names is not None:
            file.attrs["class_names"] = json.dumps(class_names)
            json_attrs.append("class_names")
        if head is not None:
            file.attrs["model_metadata"] = json.dumps({"head": head})
            json_attrs.append("model_metadata")
        file.attrs["json_attrs"] = json.dumps(json_attrs)  # as mcd-score lists its JSON attributes
    return path


def synthetic_probabilities(path: Path, n: int = 400, classes: int = 4, passes: int = 20,
                            seed: int = 0, ood_share: float = 0.2, failed_share: float = 0.05,
                            **attrs) -> Path:
    """A probabilities file: labelled class rows, ``ood`` rows (noisier), a few failures."""
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(classes)]
    truth = rng.integers(0, classes, n)
    is_ood = rng.random(n) < ood_share
    noise = np.where(is_ood, 3.0, rng.uniform(0.2, 1.5, n))
    columns: dict = probability_columns(passes_probabilities(rng, n, classes, passes, truth, noise))
    failed = rng.random(n) < failed_share
    fail_rows(columns, failed)
    status = np.array(["ok"] * n, dtype=object)
    status[failed] = [FAILURES[i % len(FAILURES)] for i in range(int(failed.sum()))]
    labels = np.where(is_ood, "ood", np.array(names)[truth]).astype(object)
    columns.update(path=[f"{lab}/{i:05d}.png" for i, lab in enumerate(labels)],
                   key=[f"{i:064x}" for i in range(n)], status=list(status), label=list(labels))
    attrs.setdefault("class_names", names)
    return write_results(path, columns, kind="probabilities", passes=passes, **attrs)


# ---- brute-force references (loops over the definitions, independent of scorer.report) ------------


def brute_ece(confidence, correct, bins: int = 15) -> float:
    """ECE by looping over bins ``(b/bins, (b+1)/bins]`` (the first also holds 0)."""
    n = len(confidence)
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i in range(n)
                   if low < confidence[i] <= high or (b == 0 and confidence[i] == 0)]
        if members:
            accuracy = sum(bool(correct[i]) for i in members) / len(members)
            mean_confidence = sum(float(confidence[i]) for i in members) / len(members)
            total += len(members) / n * abs(accuracy - mean_confidence)
    return total


def brute_aurc(uncertainty, correct) -> float:
    """AURC: mean over k of the expected error rate of the k least uncertain rows (random tie order)."""
    n = len(uncertainty)
    values = sorted(float(u) for u in uncertainty)
    total = 0.0
    for k in range(1, n + 1):
        kth = values[k - 1]
        below = [i for i in range(n) if uncertainty[i] < kth]
        tied = [i for i in range(n) if uncertainty[i] == kth]
        errors = sum(not correct[i] for i in below) + \
            (k - len(below)) * sum(not correct[i] for i in tied) / len(tied)
        total += errors / k
    return total / n


def brute_accuracy_at(uncertainty, correct, coverage: float) -> float:
    """Accuracy of the ceil(coverage * n) least uncertain rows (expected over tie orders)."""
    n = len(uncertainty)
    k = math.ceil(round(coverage * n, 6))
    kth = sorted(float(u) for u in uncertainty)[k - 1]
    below = [i for i in range(n) if uncertainty[i] < kth]
    tied = [i for i in range(n) if uncertainty[i] == kth]
    errors = sum(not correct[i] for i in below) + \
        (k - len(below)) * sum(not correct[i] for i in tied) / len(tied)
    return 1 - errors / k


def brute_fpr_at_tpr(scores, positives, level: float = 0.95) -> float:
    """FPR at the highest threshold (score >= t flagged) whose TPR reaches ``level``."""
    pos = [s for s, p in zip(scores, positives, strict=True) if p]
    neg = [s for s, p in zip(scores, positives, strict=True) if not p]
    for threshold in sorted(set(scores), reverse=True):
        if sum(s >= threshold for s in pos) / len(pos) >= level - 1e-12:
            return sum(s >= threshold for s in neg) / len(neg)
    raise AssertionError("unreachable: the lowest threshold has TPR 1")


def brute_ood_flagged(in_scores, ood_scores, keep: float = 0.95) -> float:
    """Share of OOD scores above the smallest in-distribution score keeping ``keep`` of them."""
    ordered = sorted(in_scores)
    for threshold in ordered:
        if sum(s <= threshold for s in ordered) / len(ordered) >= keep - 1e-12:
            return sum(s > threshold for s in ood_scores) / len(ood_scores)
    raise AssertionError("unreachable")


def expected_summary(path: Path, ood_labels: tuple[str, ...] = ("ood",)) -> dict:
    """The report's key numbers recomputed from the raw file with h5py, loops and scikit-learn."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    with h5py.File(path, "r") as file:
        rows = int(file.attrs.get("rows_complete", file["path"].shape[0]))
        status = np.array(file["status"].asstr()[:rows], dtype=object)
        label = np.array(file["label"].asstr()[:rows], dtype=object)
        names = json.loads(file.attrs["class_names"]) if "class_names" in file.attrs else \
            list(file["class"].asstr()[...])
        mean, std = file["mean"][:rows].astype(np.float64), file["std"][:rows].astype(np.float64)
        data = {name: file[name][:rows].astype(np.float64) for name in (
            "confidence", "predictive_entropy", "expected_entropy", "mutual_information",
            "variation_ratio")}
        data["normalized_entropy"] = file["normalized_entropy"][:rows].astype(np.float64) \
            if "normalized_entropy" in file else data["predictive_entropy"] / np.log(len(names))
        predicted = file["predicted_class"][:rows]
    ok = status == "ok"
    labelled = [i for i in range(rows) if ok[i] and label[i] in names]
    truth = {i: names.index(label[i]) for i in labelled}
    correct = [bool(predicted[i] == truth[i]) for i in labelled]
    scores = {name: data[name] for name in ("predictive_entropy", "normalized_entropy",
                                            "mutual_information", "expected_entropy",
                                            "variation_ratio")}
    scores["std"] = np.array([std[i, predicted[i]] if ok[i] else np.nan for i in range(rows)])
    scores["max_probability"] = 1 - data["confidence"]
    result = {
        "accuracy": float(np.mean(correct)),
        "nll": float(np.mean([-np.log(mean[i, truth[i]]) for i in labelled])),
        "brier": float(np.mean([sum((mean[i, c] - (c == truth[i])) ** 2 for c in range(len(names)))
                                for i in labelled])),
        "ece": brute_ece([data["confidence"][i] for i in labelled], correct),
        "selective": {}, "ood": {},
    }
    wrong = [not c for c in correct]
    for name, values in scores.items():
        picked = [float(values[i]) for i in labelled]
        result["selective"][name] = {
            "aurc": brute_aurc(picked, correct),
            "accuracy_at_coverage_90": brute_accuracy_at(picked, correct, 0.9),
            "accuracy_at_coverage_50": brute_accuracy_at(picked, correct, 0.5),
            "misclassification_auroc": roc_auc_score(wrong, picked)}
    ood_rows = [i for i in range(rows) if ok[i] and label[i] in ood_labels]
    if ood_rows:
        both = labelled + ood_rows
        is_ood = [i in set(ood_rows) for i in both]
        for name, values in scores.items():
            picked = [float(values[i]) for i in both]
            result["ood"][name] = {
                "auroc": roc_auc_score(is_ood, picked), "aupr": average_precision_score(is_ood, picked),
                "fpr_at_95_tpr": brute_fpr_at_tpr(picked, is_ood),
                "ood_flagged_at_95_in": brute_ood_flagged([float(values[i]) for i in labelled],
                                                          [float(values[i]) for i in ood_rows])}
    return result


def assert_summary_matches(numbers: dict, expected: dict, tolerance: float = 1e-9) -> None:
    """The report's JSON summary agrees with :func:`expected_summary`."""
    import pytest

    for key in ("accuracy", "nll", "brier", "ece"):
        assert numbers["classification"][key] == pytest.approx(expected[key], abs=tolerance), key
    for name, values in expected["selective"].items():
        for key, value in values.items():
            assert numbers["selective"][name][key] == pytest.approx(value, abs=tolerance), (name, key)
    for name, values in expected["ood"].items():
        for key, value in values.items():
            assert numbers["ood"]["measures"][name][key] == pytest.approx(value, abs=tolerance), (name, key)


def multilabel_file(path: Path, n: int = 240, labels: int = 4) -> Path:
    rng = np.random.default_rng(5)
    is_ood = rng.random(n) < 0.25
    logits = rng.normal(0, 2, (n, 1, labels)) + rng.normal(0, 1, (n, 12, labels)) * np.where(
        is_ood, 2.5, 0.5)[:, None, None]
    columns = multilabel_columns(1 / (1 + np.exp(-logits)))
    failed = rng.random(n) < 0.1
    fail_rows(columns, failed)
    columns.update(path=[f"p/{i}.png" for i in range(n)],
                   status=np.where(failed, "truncated", "ok").tolist(),
                   label=np.where(is_ood, "ood", "photos").tolist())
    return write_results(path, columns, kind="multilabel", passes=12,
                         class_names=[f"tag{i}" for i in range(labels)], class_dataset=True)


def with_images(tmp_path: Path, n: int = 120) -> tuple[Path, Path]:
    """A results file whose ``path`` column names PNG files that exist under ``images/``."""
    results = synthetic_probabilities(tmp_path / "r.h5", n=n, images_root=str(tmp_path / "images"))
    with h5py.File(results, "r") as raw:
        paths = raw["path"].asstr()[:]
    rng = np.random.default_rng(0)
    for path in paths:
        file = tmp_path / "images" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(file)
    return results, tmp_path / "images"
