"""scorer.report.load: reading results files by dataset name, in row slices."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from report_support import synthetic_probabilities, write_results

from scorer.report import load
from scorer.report.errors import ResultsFileError
from scorer.report.load import ResultsReader


def test_reads_attributes_and_columns(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=50, classes=3, passes=7,
                                   images_root="/data/images", head="softmax")
    with ResultsReader(path) as reader, h5py.File(path, "r") as raw:
        info = reader.info
        assert (info.kind, info.num_outputs, info.passes, info.rows) == ("probabilities", 3, 7, 50)
        assert info.class_names == ("c0", "c1", "c2")
        assert (info.images_root, info.schema_version, info.head) == ("/data/images", 1, "softmax")
        assert not info.binary_sigmoid
        np.testing.assert_array_equal(reader.column("mutual_information"), raw["mutual_information"][:])
        codes, values = reader.categories("label")
        assert [values[c] for c in codes] == list(raw["label"].asstr()[:])
        assert reader.strings_at("path", [7, 2, 7]) == [raw["path"].asstr()[i] for i in (7, 2, 7)]
        np.testing.assert_array_equal(reader.matrix_rows("mean", [9, 0]), raw["mean"][:][[9, 0]])


def test_matrix_chunks_cover_every_row_once(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=101, classes=4)
    with ResultsReader(path) as reader, h5py.File(path, "r") as raw:
        starts, blocks = zip(*[(s, b["std"]) for s, b in reader.matrix_chunks(["std"],
                                                                             chunk_bytes=8 * 4 * 10)],
                             strict=True)
        assert starts == tuple(range(0, 101, 10))
        np.testing.assert_array_equal(np.concatenate(blocks), raw["std"][:])


def test_rows_complete_limits_the_rows_read(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=30, rows_complete=12)
    with ResultsReader(path) as reader:
        assert reader.info.rows == 12
        assert reader.column("confidence").shape == (12,)
        assert len(reader.categories("status")[0]) == 12
        assert sum(len(b["mean"]) for _, b in reader.matrix_chunks(["mean"])) == 12


def test_class_names_from_a_class_dataset(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=10, classes=3, class_dataset=True)
    with h5py.File(path, "r") as raw:
        assert "class_names" not in raw.attrs and "class" in raw
    with ResultsReader(path) as reader:
        assert reader.info.class_names == ("c0", "c1", "c2")


@pytest.mark.parametrize("names", [None, "", "[]", json.dumps(["a", "b"])])
def test_missing_empty_or_mismatched_class_names_mean_none(tmp_path: Path, names) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=10, classes=3)
    with h5py.File(path, "a") as raw:
        del raw.attrs["class_names"]
        if names is not None:
            raw.attrs["class_names"] = names
    with ResultsReader(path) as reader:
        assert reader.info.class_names == ()


def test_kind_is_inferred_without_the_attribute(tmp_path: Path) -> None:
    columns = {"path": ["a.png"], "status": ["ok"], "mean": np.ones((1, 2)), "std": np.zeros((1, 2)),
               "label_mutual_information": np.zeros((1, 2))}
    path = write_results(tmp_path / "m.h5", columns, kind="multilabel")
    with h5py.File(path, "a") as raw:
        del raw.attrs["kind"], raw.attrs["num_outputs"]
    with ResultsReader(path) as reader:
        assert (reader.info.kind, reader.info.num_outputs) == ("multilabel", 2)


def test_binary_sigmoid_head_is_recognised(tmp_path: Path) -> None:
    path = synthetic_probabilities(tmp_path / "r.h5", n=10, classes=2, head="sigmoid")
    with ResultsReader(path) as reader:
        assert reader.info.binary_sigmoid


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match="does not exist"):
        ResultsReader(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ResultsFileError, match="not a readable HDF5 file"):
        ResultsReader(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file["x"] = np.zeros(3)
    with pytest.raises(ResultsFileError, match="not an mcd-score results file: it has no "
                                               "'schema_version'"):
        ResultsReader(tmp_path / "other.h5")
    with h5py.File(tmp_path / "other.h5", "a") as file:
        file.attrs["schema_version"] = 2
    with pytest.raises(ResultsFileError, match=r"lacks the dataset\(s\) path, status .*found: x"):
        ResultsReader(tmp_path / "other.h5")
    with h5py.File(tmp_path / "other.h5", "a") as file:
        file.attrs["schema_version"] = 3
    with pytest.raises(ResultsFileError, match="schema version 3, this mcd-score reads up to 2"):
        ResultsReader(tmp_path / "other.h5")
    path = synthetic_probabilities(tmp_path / "r.h5", n=5)
    with h5py.File(path, "a") as raw:
        raw.attrs["kind"] = "mixture"
    with pytest.raises(ResultsFileError, match="kind 'mixture'"):
        ResultsReader(path)


def test_reader_never_reads_a_whole_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a small slice size, no read of mean/std returns more than the slice."""
    path = synthetic_probabilities(tmp_path / "r.h5", n=200, classes=4)
    monkeypatch.setattr(load, "CHUNK_BYTES", 8 * 4 * 16)
    seen: list[int] = []
    original = h5py.Dataset.__getitem__

    def spy(self, selection):
        result = original(self, selection)
        if self.name in ("/mean", "/std"):
            seen.append(len(result))
        return result

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    from scorer.report.columns import read_table

    with ResultsReader(path) as reader:
        read_table(reader, ("ood",))
    assert seen and max(seen) <= 16
