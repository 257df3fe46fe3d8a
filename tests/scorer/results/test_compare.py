"""Tests for the regression comparison of two results files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from scorer.errors import OutputError
from scorer.results.compare import compare_results, element_differences, format_comparison
from scorer.results.matching import match_rows
from scorer.results.schema import FileHeader
from scorer.results.writer import write_results

SCALARS = ("confidence", "predictive_entropy", "normalized_entropy", "expected_entropy",
           "mutual_information", "variation_ratio")


def make_columns(count: int = 6, num_outputs: int = 3, passes: int = 4,
                 kind: str = "probabilities") -> dict[str, object]:
    """Columns of a small run: image i has mean[i, c] = (i + c + 1) / 10, and so on."""
    mean = (np.arange(count)[:, None] + np.arange(num_outputs)[None, :] + 1) / 10.0
    columns: dict[str, object] = {
        "path": [f"img/{i}.png" for i in range(count)],
        "key": [f"{i:064x}" for i in range(count)],
        "status": ["ok"] * count,
        "mean": mean,
        "std": mean / 4,
        "passes": np.repeat(mean[:, None, :], passes, axis=1),
    }
    if kind == "probabilities":
        columns["predicted_class"] = np.full(count, num_outputs - 1)
        for k, name in enumerate(SCALARS):
            columns[name] = np.linspace(0.1, 0.9, count) + k
    return columns


def write(path: Path, columns: dict[str, object], *, kind: str = "probabilities",
          seed: int = 0, passes: int = 4, save_passes: bool = False,
          attrs: dict | None = None) -> Path:
    count = len(columns["path"])
    num_outputs = np.asarray(columns["mean"]).shape[1]
    rows = {"reason": [""] * count, **columns}
    if not save_passes:
        rows.pop("passes")
    header = FileHeader(kind, num_outputs, passes, seed, save_passes, False,
                        attrs=attrs or {"model_sha256": "abc"})
    write_results(path, header, [rows], count)
    return path


def pair(tmp_path: Path, change=None, **options) -> tuple[Path, Path]:
    """A reference file and a new file whose columns went through ``change``."""
    ref_options = {k: v for k, v in options.items() if not k.startswith("new_")}
    new_options = {**ref_options, **{k[4:]: v for k, v in options.items()
                                     if k.startswith("new_")}}
    ref = write(tmp_path / "ref.h5", make_columns(kind=ref_options.get("kind", "probabilities")),
                **ref_options)
    columns = make_columns(kind=new_options.get("kind", "probabilities"))
    if change is not None:
        change(columns)
    new = write(tmp_path / "new.h5", columns, **new_options)
    return ref, new


def test_identical_files_are_ok(tmp_path: Path) -> None:
    ref, new = pair(tmp_path)
    comparison = compare_results(ref, new)
    assert comparison.ok
    assert comparison.rows_matched == 6
    assert {m.name for m in comparison.metrics} == {"mean", "std", *SCALARS}
    assert {e.name for e in comparison.exact} == {"predicted_class", "status", "key"}
    assert all(m.max_abs_diff == 0 for m in comparison.metrics)
    report = format_comparison(comparison)
    assert report.splitlines()[-1].startswith("OK: 6 rows match")
    assert "mutual_information" in report


def test_tiny_differences_within_tolerance_are_ok(tmp_path: Path) -> None:
    def nudge(columns: dict) -> None:
        columns["mean"] = columns["mean"] * (1 + 2e-6)

    comparison = compare_results(*pair(tmp_path, nudge))
    assert comparison.ok
    mean = next(m for m in comparison.metrics if m.name == "mean")
    assert 0 < mean.max_abs_diff < 1e-5
    assert mean.rows_out_of_tolerance == 0
    assert mean.worst == []


def test_a_changed_value_fails_and_names_image_and_class(tmp_path: Path) -> None:
    def change(columns: dict) -> None:
        columns["mean"][4, 2] += 0.25
        columns["mean"][1, 0] += 0.01
        columns["confidence"][3] = 0.0

    comparison = compare_results(*pair(tmp_path, change))

    assert not comparison.ok
    mean = next(m for m in comparison.metrics if m.name == "mean")
    assert mean.rows_out_of_tolerance == 2
    assert mean.max_abs_diff == pytest.approx(0.25, rel=1e-6)
    assert [(w.path, w.element) for w in mean.worst] == [("img/4.png", (2,)), ("img/1.png", (0,))]
    assert mean.worst[0].ref == pytest.approx(0.7)
    assert mean.worst[0].new == pytest.approx(0.95)
    confidence = next(m for m in comparison.metrics if m.name == "confidence")
    assert [(w.path, w.element) for w in confidence.worst] == [("img/3.png", ())]
    std = next(m for m in comparison.metrics if m.name == "std")
    assert std.rows_out_of_tolerance == 0
    report = format_comparison(comparison)
    assert "mean[2]  img/4.png: ref 0.7, new 0.95" in report
    assert "confidence  img/3.png" in report
    assert report.splitlines()[-1] == ("DIFFERENT: mean: 2 rows out of tolerance; "
                                       "confidence: 1 rows out of tolerance")


def test_worst_lists_at_most_worst_rows_largest_first(tmp_path: Path) -> None:
    def change(columns: dict) -> None:
        columns["std"][:, 1] += np.array([1, 5, 3, 2, 4, 6]) / 100

    comparison = compare_results(*pair(tmp_path, change), worst=3)
    std = next(m for m in comparison.metrics if m.name == "std")
    assert std.rows_out_of_tolerance == 6
    assert [w.path for w in std.worst] == ["img/5.png", "img/1.png", "img/4.png"]


def test_nan_in_both_is_equal_nan_in_one_differs(tmp_path: Path) -> None:
    def fail_row(columns: dict) -> None:
        columns["status"][2] = "unreadable"
        for name in ("mean", "std", *SCALARS):
            columns[name][2] = np.nan

    ref = write(tmp_path / "ref.h5", _changed(fail_row))
    same = write(tmp_path / "same.h5", _changed(fail_row))
    scored = write(tmp_path / "scored.h5", make_columns())

    assert compare_results(ref, same).ok

    comparison = compare_results(ref, scored)
    assert not comparison.ok
    mean = next(m for m in comparison.metrics if m.name == "mean")
    assert mean.rows_out_of_tolerance == 1
    assert mean.max_abs_diff == np.inf
    assert np.isnan(mean.worst[0].ref)
    assert mean.worst[0].path == "img/2.png"
    status = next(e for e in comparison.exact if e.name == "status")
    assert status.examples == [("img/2.png", "unreadable", "ok")]


def test_exact_columns_report_changed_rows(tmp_path: Path) -> None:
    def change(columns: dict) -> None:
        columns["predicted_class"][[1, 3]] = 0
        columns["key"][5] = "f" * 64

    comparison = compare_results(*pair(tmp_path, change))
    assert not comparison.ok
    exact = {e.name: e for e in comparison.exact}
    assert exact["predicted_class"].rows_changed == 2
    assert exact["predicted_class"].examples == [("img/1.png", 2, 0), ("img/3.png", 2, 0)]
    assert exact["key"].examples == [("img/5.png", f"{5:064x}", "f" * 64)]
    assert exact["status"].rows_changed == 0
    assert "predicted_class: 2 rows changed" in format_comparison(comparison)


def test_missing_and_extra_paths_fail(tmp_path: Path) -> None:
    def rename(columns: dict) -> None:
        columns["path"][0] = "img/other.png"

    comparison = compare_results(*pair(tmp_path, rename))
    assert not comparison.ok
    assert comparison.only_in_ref == ["img/0.png"]
    assert comparison.only_in_new == ["img/other.png"]
    assert comparison.rows_matched == 5
    assert all(m.rows_out_of_tolerance == 0 for m in comparison.metrics)
    report = format_comparison(comparison)
    assert "Only in ref (1): img/0.png" in report
    assert report.endswith("1 paths only in ref; 1 paths only in new")


def test_row_order_does_not_matter(tmp_path: Path) -> None:
    order = np.array([3, 0, 5, 1, 4, 2])

    def shuffle(columns: dict) -> None:
        for name, values in columns.items():
            columns[name] = list(np.asarray(values)[order]) if isinstance(values, list) \
                else values[order]

    comparison = compare_results(*pair(tmp_path, shuffle))
    assert comparison.ok
    assert comparison.rows_matched == 6


def test_match_rows_pairs_repeated_paths_in_turn() -> None:
    ref = np.array(["a", "b", "a", "c"], dtype=object)
    new = np.array(["a", "a", "b"], dtype=object)
    ref_rows, new_rows = match_rows(ref, new)
    assert ref_rows.tolist() == [0, 1, 2]
    assert new_rows.tolist() == [0, 2, 1]


def by_dictionary(ref: list[str], new: list[str]) -> tuple[list[int], list[int]]:
    """The matching by definition: the k-th occurrence of a path in ref is its k-th in new."""
    rows_of: dict[str, list[int]] = {}
    for row, path in enumerate(new):
        rows_of.setdefault(path, []).append(row)
    used: dict[str, int] = {}
    pairs = []
    for row, path in enumerate(ref):
        k = used.get(path, 0)
        used[path] = k + 1
        if k < len(rows_of.get(path, [])):
            pairs.append((row, rows_of[path][k]))
    return [r for r, _ in pairs], [n for _, n in pairs]


def test_match_rows_equals_the_matching_by_definition_on_random_lists() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        ref = [f"p{i}" for i in rng.integers(0, 12, int(rng.integers(0, 30)))]
        new = [f"p{i}" for i in rng.integers(0, 12, int(rng.integers(0, 30)))]
        ref_rows, new_rows = match_rows(ref, new)
        assert (ref_rows.tolist(), new_rows.tolist()) == by_dictionary(ref, new)


def test_provenance_differences_are_flagged_but_do_not_fail(tmp_path: Path) -> None:
    ref, new = pair(tmp_path, new_seed=7, new_attrs={"model_sha256": "def"})
    comparison = compare_results(ref, new)
    assert comparison.ok
    assert {(a.name, a.ref, a.new) for a in comparison.provenance} == {
        ("seed", 0, 7), ("model_sha256", "abc", "def")}
    report = format_comparison(comparison)
    assert "! seed: ref 0, new 7" in report
    assert report.splitlines()[-1].endswith("provenance differs: model_sha256, seed")


def test_different_kind_is_incomparable(tmp_path: Path) -> None:
    ref, new = pair(tmp_path, new_kind="values")
    comparison = compare_results(ref, new)
    assert not comparison.ok
    assert comparison.metrics == []
    assert any("kind differs" in reason for reason in comparison.incomparable)
    assert "DIFFERENT: kind differs ('probabilities' in ref, 'values' in new)" in \
        format_comparison(comparison)


def test_different_num_outputs_is_incomparable(tmp_path: Path) -> None:
    ref = write(tmp_path / "ref.h5", make_columns(num_outputs=3))
    new = write(tmp_path / "new.h5", make_columns(num_outputs=4))
    comparison = compare_results(ref, new)
    assert not comparison.ok
    assert [a.name for a in comparison.provenance] == ["num_outputs"]


def test_passes_compared_when_both_have_them(tmp_path: Path) -> None:
    def change(columns: dict) -> None:
        columns["passes"][2, 3, 1] = 0.0

    ref, new = pair(tmp_path, change, save_passes=True)
    comparison = compare_results(ref, new)
    passes = next(m for m in comparison.metrics if m.name == "passes")
    assert passes.rows_out_of_tolerance == 1
    assert (passes.worst[0].path, passes.worst[0].element) == ("img/2.png", (3, 1))
    assert "passes[3, 1]  img/2.png" in format_comparison(comparison)


def test_passes_in_one_file_only_is_a_note(tmp_path: Path) -> None:
    ref, new = pair(tmp_path, new_save_passes=True)
    comparison = compare_results(ref, new)
    assert comparison.ok
    assert comparison.notes == ["passes not compared: only the new file has it"]


def test_different_pass_counts_are_flagged_and_passes_skipped(tmp_path: Path) -> None:
    ref = write(tmp_path / "ref.h5", make_columns(passes=4), save_passes=True)
    new = write(tmp_path / "new.h5", make_columns(passes=5), passes=5, save_passes=True)
    comparison = compare_results(ref, new)
    assert comparison.ok
    assert [a.name for a in comparison.provenance] == ["passes"]
    assert "passes" not in {m.name for m in comparison.metrics}
    assert comparison.notes[0].startswith("passes not compared: shape (4, 3)")


def test_values_kind_compares_mean_and_std(tmp_path: Path) -> None:
    ref, new = pair(tmp_path, kind="values")
    comparison = compare_results(ref, new)
    assert comparison.ok
    assert [m.name for m in comparison.metrics] == ["mean", "std"]


def test_element_differences_by_hand() -> None:
    ref = np.array([1.0, np.nan, np.nan, 2.0, np.inf, 100.0])
    new = np.array([1.0 + 1e-7, np.nan, 0.5, 2.1, np.inf, 100.0009])
    diff, close = element_differences(ref, new, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(diff, [1e-7, 0.0, np.inf, 0.1, 0.0, 0.0009], rtol=1e-6)
    assert close.tolist() == [True, True, False, False, True, True]


def test_non_mcd_files_are_refused(tmp_path: Path) -> None:
    good = write(tmp_path / "good.h5", make_columns())
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as file:
        file["path"] = np.array([b"a"])
    with pytest.raises(OutputError, match="not an mcd-score results file"):
        compare_results(good, plain)
    with pytest.raises(OutputError, match="missing.h5 does not exist"):
        compare_results(tmp_path / "missing.h5", good)
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    with pytest.raises(OutputError, match="not a readable HDF5 file"):
        compare_results(good, text)


def _changed(change) -> dict[str, object]:
    columns = make_columns()
    change(columns)
    return columns


def test_new_lacking_a_dataset_of_the_reference_fails_and_names_it(tmp_path: Path) -> None:
    """NEW lacking metric datasets that REFERENCE has fails the comparison, which names them."""
    ref, new = pair(tmp_path)
    with h5py.File(new, "a") as file:
        del file["mutual_information"]
        del file["variation_ratio"]
    result = compare_results(ref, new)
    assert not result.ok
    assert result.missing_datasets == ["mutual_information", "variation_ratio"]
    assert "new lacks datasets the reference has: mutual_information, variation_ratio" in \
        format_comparison(result)
    assert compare_results(new, ref).ok  # extra datasets in NEW are only noted


def large_columns(count: int, order: np.ndarray | None = None) -> dict[str, object]:
    """``count`` rows of 3 classes; ``order`` permutes the rows (a file of the same images,
    listed in another order)."""
    rows = np.arange(count) if order is None else order
    mean = np.stack([rows / count, 1 - rows / count, np.full(count, 0.5)], axis=1)
    columns: dict[str, object] = {
        "path": [f"folder/{i:07d}.png" for i in rows], "key": [f"{i:064x}" for i in rows],
        "status": ["ok"] * count, "reason": [""] * count, "mean": mean, "std": mean / 4,
        "predicted_class": np.argmax(mean, axis=1)}
    for k, name in enumerate(SCALARS):
        columns[name] = rows / count + k
    return columns


def write_large(path: Path, columns: dict[str, object]) -> Path:
    header = FileHeader("probabilities", 3, 4, 0, False, False, attrs={"model_sha256": "abc"})
    count = len(columns["path"])
    blocks = ({name: values[start:start + 50_000] for name, values in columns.items()}
              for start in range(0, count, 50_000))
    write_results(path, header, blocks, count)
    return path


def test_files_in_the_same_order_are_compared_in_blocks_of_rows(tmp_path: Path) -> None:
    """300,000 rows (19 blocks): a change in the last block is found, and the comparison's
    Python and numpy allocations peak at 10 MB here whatever the rows (the paths and keys of both
    files alone, read whole as the comparison did before, are about 70 MB); bound 25 MB."""
    import tracemalloc

    count = 300_000
    ref = write_large(tmp_path / "ref.h5", large_columns(count))
    columns = large_columns(count)
    columns["mean"][count - 2, 1] += 0.25
    columns["key"][count - 3] = "0" * 64
    new = write_large(tmp_path / "new.h5", columns)
    del columns
    tracemalloc.start()
    try:
        comparison = compare_results(ref, new)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 25e6, peak
    assert comparison.rows_matched == count and not comparison.only_in_ref
    metrics = {m.name: m for m in comparison.metrics}
    assert metrics["mean"].rows_out_of_tolerance == 1
    assert metrics["mean"].worst[0].path == f"folder/{count - 2:07d}.png"
    assert metrics["mean"].worst[0].element == (1,)
    assert metrics["mean"].max_abs_diff == pytest.approx(0.25)
    exact = {e.name: e for e in comparison.exact}
    assert exact["key"].examples == [(f"folder/{count - 3:07d}.png", f"{count - 3:064x}", "0" * 64)]
    assert exact["predicted_class"].rows_changed == 0


def test_files_in_another_order_match_across_blocks(tmp_path: Path) -> None:
    """The same 150,000 images in reverse order, one value and one key changed: matched by path
    across blocks, and the changes are named by path with their values from each file."""
    count = 150_000
    ref = write_large(tmp_path / "ref.h5", large_columns(count))
    order = np.arange(count)[::-1].copy()
    columns = large_columns(count, order)
    row_of = {int(image): row for row, image in enumerate(order)}
    columns["confidence"][row_of[7]] = 99.0
    columns["key"][row_of[100_001]] = "f" * 64
    new = write_large(tmp_path / "new.h5", columns)
    comparison = compare_results(ref, new)
    assert comparison.rows_matched == count and not comparison.only_in_new
    confidence = {m.name: m for m in comparison.metrics}["confidence"]
    assert confidence.rows_out_of_tolerance == 1
    assert confidence.worst[0].path == "folder/0000007.png"
    assert (confidence.worst[0].ref, confidence.worst[0].new) == (pytest.approx(7 / count), 99.0)
    assert {m.name: m for m in comparison.metrics}["mean"].rows_out_of_tolerance == 0
    key = {e.name: e for e in comparison.exact}["key"]
    assert key.examples == [("folder/0100001.png", f"{100_001:064x}", "f" * 64)]


def test_paths_that_are_not_utf8_match_by_their_exact_bytes(tmp_path: Path) -> None:
    import os

    latin1, utf8 = os.fsdecode(b"caf\xe9.png"), "café.png"  # the same text, other bytes
    columns = make_columns(count=3)
    columns["path"] = [latin1, utf8, "plain.png"]
    ref = write(tmp_path / "ref.h5", columns)
    columns = make_columns(count=3)
    columns["path"] = ["plain.png", utf8, os.fsdecode(b"caf\xe8.png")]
    new = write(tmp_path / "new.h5", columns)
    comparison = compare_results(ref, new)
    assert comparison.rows_matched == 2
    assert comparison.only_in_ref == [latin1]
    assert comparison.only_in_new == [os.fsdecode(b"caf\xe8.png")]
