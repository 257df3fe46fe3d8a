"""The finished results file (scorer.results.writer) and its readers: h5py, read_results, xarray."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from paths import DATA
from results_support import CLASSES, make_rows, write

from scorer import read_results
from scorer.errors import OutputError, ScorerUsageError
from scorer.results import schema
from scorer.results.reader import read_arrays, table_columns
from scorer.results.schema import FileHeader
from scorer.results.writer import write_results

V1 = DATA / "v1"
RAW_NAME = os.fsdecode(b"photos/\xff\xfeodd.jpg")






@pytest.mark.parametrize("kind", ["probabilities", "multilabel", "values"])
@pytest.mark.parametrize(("labels", "save_passes"), [(False, False), (True, True)])
def test_arrays_round_trip(tmp_path: Path, kind: str, labels: bool, save_passes: bool) -> None:
    path = tmp_path / "out.h5"
    rows = write(path, kind, save_passes=save_passes, labels=labels)
    data, attrs = read_arrays(path)
    expected = {s.name for s in schema.dataset_specs(kind, save_passes, labels)}
    assert set(data) == expected
    for name in expected:
        np.testing.assert_array_equal(np.asarray(data[name]), np.asarray(rows[name]), err_msg=name)
    assert attrs["schema_version"] == 2 and attrs["kind"] == kind and attrs["seed"] == 11
    assert attrs["class_names"] == list(CLASSES) and attrs["versions"] == {"x": 1}


def test_every_dataset_has_a_description_and_is_chunked_and_compressed(tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    write(path)
    with h5py.File(path) as file:
        for spec in schema.dataset_specs("probabilities", True, True):
            dataset = file[spec.name]
            assert dataset.attrs["description"] == spec.description
            assert dataset.compression == "gzip" and dataset.shuffle and dataset.chunks


@pytest.mark.parametrize("kind", ["probabilities", "multilabel", "values"])
def test_xarray_opens_it_with_named_dimensions_and_class_names(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "out.h5"
    rows = write(path, kind)
    classes = "output" if kind == "values" else "class"
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["mean"].dims == ("image", classes)
        assert ds["passes"].dims == ("image", "pass", classes)
        assert ds["status"].dims == ("image",)
        assert list(ds[classes].values) == list(CLASSES)
        assert ds.sizes == {"image": 7, classes: 3, "pass": 4}
        assert isinstance(ds["path"].values[0], str) and list(ds["path"].values) == rows["path"]
        np.testing.assert_array_equal(ds["mean"].sel({classes: "dog"}).values,
                                      np.asarray(rows["mean"])[:, 1])
        assert ds.attrs["kind"] == kind


def test_read_results_is_one_row_per_image_with_a_column_per_class(tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    rows = write(path, count=9, batches=3)
    table = read_results(path)
    assert isinstance(table, pd.DataFrame) and len(table) == 9
    assert list(table.columns[:6]) == ["path", "label", "status", "reason", "predicted_class",
                                       "predicted_name"]
    assert "mean_émeu" in table.columns and "std_cat" in table.columns and "passes" not in table
    assert table["path"].tolist() == rows["path"]
    np.testing.assert_array_equal(table["std_dog"], np.asarray(rows["std"])[:, 1])
    np.testing.assert_array_equal(table["mutual_information"], rows["mutual_information"])
    ok = np.asarray(rows["status"]) == "ok"
    names = np.array(CLASSES)[np.asarray(rows["predicted_class"])]
    assert table["predicted_name"][ok].tolist() == names[ok].tolist()
    assert table.columns.tolist() == table_columns_of(path)


def table_columns_of(path: Path) -> list[str]:
    with h5py.File(path) as file:
        return table_columns(file)


def test_read_results_reads_only_the_asked_columns_in_chunks(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "out.h5"
    rows = write(path, count=10)
    read = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        read.append(self.name)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    frames = list(read_results(path, columns=["path", "mean_dog"], chunk_rows=4))
    assert [len(f) for f in frames] == [4, 4, 2]
    assert {name for name in read} <= {"/path", "/mean", "/class", "/kind"}
    joined = pd.concat(frames, ignore_index=True)
    np.testing.assert_array_equal(joined["mean_dog"], np.asarray(rows["mean"])[:, 1])
    with pytest.raises(ScorerUsageError, match="no columns \\['nope'\\]"):
        read_results(path, columns=["nope"])


def test_names_that_are_not_utf8_round_trip_byte_exact(tmp_path: Path) -> None:
    """A file name that is not valid UTF-8 is written and read back byte-exact, and other readers
    see it as escaped text."""
    path = tmp_path / "out.h5"
    header = FileHeader("values", 3, 4, 0, False, False)
    rows = make_rows("values", 3)
    rows["path"][1] = RAW_NAME
    write_results(path, header, [rows], 3)
    data, _ = read_arrays(path)
    assert data["path"][1].encode("utf-8", "surrogateescape") == b"photos/\xff\xfeodd.jpg"
    assert read_results(path)["path"][1] == RAW_NAME
    with xr.open_dataset(path, engine="h5netcdf") as ds:  # readable text for everyone else
        assert ds["path"].values[1] == "photos/\\xff\\xfeodd.jpg"


def test_a_stitched_file_reads_like_the_plain_file_of_its_parts(tmp_path: Path) -> None:
    """Virtual datasets over two parts, the second with a name that is not UTF-8 (only that part
    has path_bytes_hex): every dataset, descriptions and the byte-exact path as in one file."""
    from scorer.results.stitch import write_stitched

    header = FileHeader("probabilities", 3, 4, 0, True, False)
    first, second = make_rows("probabilities", 3), make_rows("probabilities", 2, start=3)
    second["path"][1] = RAW_NAME
    write_results(tmp_path / "a.h5", header, [first], 3)
    write_results(tmp_path / "b.h5", header, [second], 2)
    write_results(tmp_path / "plain.h5", header,
                  [{k: [*first[k], *second[k]] if isinstance(first[k], list) else
                    np.concatenate([first[k], second[k]]) for k in first}], 5)
    write_stitched(tmp_path / "stitched.h5", header, [(tmp_path / "a.h5", 3), (tmp_path / "b.h5", 2)])
    plain, _ = read_arrays(tmp_path / "plain.h5")
    stitched, _ = read_arrays(tmp_path / "stitched.h5")
    assert sorted(plain) == sorted(stitched) and stitched["path"][4] == RAW_NAME
    for name, values in plain.items():
        np.testing.assert_array_equal(values, stitched[name], err_msg=name)
    with h5py.File(tmp_path / "plain.h5") as a, h5py.File(tmp_path / "stitched.h5") as b:
        assert b["path_bytes_hex"].is_virtual and sorted(a) == sorted(b)
        for name in a:
            assert dict(a[name].attrs).get("description") == dict(b[name].attrs).get("description")


def test_schema_1_files_are_still_read(tmp_path: Path) -> None:
    data, attrs = read_arrays(V1 / "complete.h5")
    assert attrs["schema_version"] == 1 and len(data["path"]) == 15
    assert data["reason"][data["status"] != "ok"].tolist() == data["status"][data["status"] != "ok"].tolist()
    table = read_results(V1 / "complete.h5")
    assert table["mean_3"].notna().sum() == 14 and "predicted_name" in table
    partial, _ = read_arrays(V1 / "partial.h5")  # only the flushed rows_complete rows
    assert len(partial["path"]) == 8


def test_pandas_missing_is_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "out.h5"
    write(path)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ScorerUsageError, match=r"needs pandas: pip install 'mcd-score\[table\]'"):
        read_results(path)


@pytest.mark.parametrize("case", ["missing", "not-hdf5", "foreign", "newer"])
def test_other_files_are_refused(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x.h5"
    if case == "not-hdf5":
        path.write_text("hello")
    elif case == "foreign":
        with h5py.File(path, "w") as file:
            file["data"] = [1, 2]
    elif case == "newer":
        write(path)
        with h5py.File(path, "a") as file:
            file.attrs["schema_version"] = 99
    with pytest.raises(OutputError):
        read_arrays(path)


def test_a_copy_is_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    write(path)
    shutil.copy(path, tmp_path / "copy.h5")
    first, second = read_arrays(path)[0], read_arrays(tmp_path / "copy.h5")[0]
    for name in first:
        np.testing.assert_array_equal(np.asarray(first[name]), np.asarray(second[name]))
