"""``mcd-score table``: the results as CSV or Parquet, filtered and sorted, equal to h5py's values."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from results_support import CLASSES, make_rows, write

from scorer.cli.main import main
from scorer.errors import ScorerUsageError
from scorer.results.reader import read_arrays
from scorer.results.schema import FileHeader
from scorer.results.table import TableQuery, parse_condition, select, write_table
from scorer.results.writer import write_results


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "out.h5"
    write(path, count=12, batches=3)
    return path


def table(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["table", *map(str, args)])
    return result.exit_code, result.output


def test_csv_on_stdout_equals_the_datasets(results: Path) -> None:
    code, output = table(results, "--csv", "-")
    assert code == 0, output
    frame = pd.read_csv(io.StringIO(output), keep_default_na=False, na_values=[""])
    data, _ = read_arrays(results)
    assert frame["path"].tolist() == list(data["path"])
    assert frame["status"].tolist() == list(data["status"])
    np.testing.assert_allclose(frame["mutual_information"], data["mutual_information"], rtol=1e-6)
    for c, name in enumerate(CLASSES):
        np.testing.assert_allclose(frame[f"mean_{name}"], data["mean"][:, c], rtol=1e-6)
    assert table(results)[1] == output  # CSV on stdout is the default


def test_where_sort_and_top(results: Path) -> None:
    code, output = table(results, "--where", "status=ok", "--where", "label!=dog", "--sort",
                         "mutual_information", "--top", "3", "--columns", "path,mutual_information")
    assert code == 0, output
    frame = pd.read_csv(io.StringIO(output))
    data, _ = read_arrays(results)
    keep = (data["status"] == "ok") & (data["label"] != "dog")
    order = np.argsort(-data["mutual_information"][keep], kind="stable")[:3]
    assert frame.columns.tolist() == ["path", "mutual_information"]
    assert frame["path"].tolist() == list(np.asarray(data["path"])[keep][order])
    ascending = select(results, TableQuery(where=["mean_cat>4.065"], sort="confidence", ascending=True))
    assert (ascending["confidence"].diff().dropna() >= 0).all()
    assert (ascending["mean_cat"] > 4.065).all() and len(ascending) == 6  # mean_cat = 4 + (i+1)/100


def test_parquet(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    code, output = table(results, "--parquet", out)
    assert code == 0 and output == ""
    frame = pd.read_parquet(out)
    assert frame["path"].tolist() == list(read_arrays(results)[0]["path"])


@pytest.mark.parametrize(("args", "message"), [
    (["--where", "nonsense"], "is not COLUMN=VALUE"),
    (["--where", "color=red"], "has no column 'color'"),
    (["--sort", "nope"], "has no column 'nope'"),
    (["--where", "confidence>high"], "'high' is not a number"),
])
def test_bad_queries_are_usage_errors(results: Path, args: list[str], message: str) -> None:
    code, output = table(results, *args)
    assert code == 2 and message in output


def test_parse_condition() -> None:
    assert parse_condition("status=ok") == ("status", "=", "ok")
    assert parse_condition(" mutual_information >= 0.5 ") == ("mutual_information", ">=", "0.5")
    assert parse_condition("label!=") == ("label", "!=", "")
    with pytest.raises(ScorerUsageError):
        parse_condition("=ok")


@pytest.mark.parametrize("query", [
    TableQuery(),
    TableQuery(where=["mutual_information>20.5"]),  # leaves the first chunks empty
    TableQuery(top=6),
    TableQuery(sort="mutual_information", top=5, where=["status=ok"]),
    TableQuery(sort="confidence", ascending=True),
], ids=["all", "first-chunks-empty", "top", "sort-top", "sort"])
def test_chunked_output_equals_the_output_of_one_chunk(query: TableQuery, tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    write(path, count=30, batches=3)
    outputs = []
    for chunk_rows in (4, 1000):
        csv, parquet = tmp_path / f"{chunk_rows}.csv", tmp_path / f"{chunk_rows}.parquet"
        rows = write_table(path, query, csv=csv, parquet=parquet, chunk_rows=chunk_rows)
        outputs.append((rows, csv.read_text(encoding="utf-8"), pd.read_parquet(parquet)))
    (rows, text, frame), (whole_rows, whole_text, whole_frame) = outputs
    assert rows == whole_rows == len(frame) > 0 and text == whole_text
    pd.testing.assert_frame_equal(frame, whole_frame)
    assert text.count("\n") == rows + 1


def test_nothing_selected_writes_the_header_only(results: Path, tmp_path: Path) -> None:
    csv = tmp_path / "none.csv"
    assert write_table(results, TableQuery(where=["status=nothing"], columns=["path"]), csv=csv,
                       chunk_rows=4) == 0
    assert csv.read_text() == "path\n"


def test_a_table_without_sort_is_written_in_chunks(tmp_path: Path) -> None:
    """60,000 rows written as CSV in chunks of 4,096: Python and numpy allocations peak at 11 MB
    here, as for 80,000 rows (the whole table in one DataFrame, as before: 35 MB); bound 20 MB."""
    import tracemalloc

    path = tmp_path / "out.h5"
    write(path, count=60_000, save_passes=False, batches=4)
    write_table(path, TableQuery(top=1), csv=tmp_path / "warm.csv")  # imports, caches
    tracemalloc.start()
    try:
        rows = write_table(path, TableQuery(), csv=tmp_path / "t.csv", chunk_rows=4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == 60_000 and peak < 20e6, peak


def test_a_bad_query_leaves_an_existing_output_untouched(results: Path, tmp_path: Path) -> None:
    kept = tmp_path / "keep.csv"
    kept.write_text("earlier table\n")
    for where in ("color=red", "confidence>high"):
        code, output = table(results, "--csv", kept, "--where", where)
        assert code == 2, output
        assert kept.read_text() == "earlier table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv", "out.h5"]


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    """A name that is not UTF-8 in a later chunk cannot be written to Parquet: the command
    fails and leaves neither a truncated file nor a temporary one."""
    path = tmp_path / "out.h5"
    columns = make_rows("probabilities", 12)
    columns["path"][9] = os.fsdecode(b"x\xff.png")
    header = FileHeader("probabilities", 3, 4, 11, True, True, CLASSES, {"model_sha256": "m"})
    write_results(path, header, [columns], 12)
    with pytest.raises(UnicodeEncodeError):
        write_table(path, TableQuery(), csv=None, parquet=tmp_path / "t.parquet", chunk_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_a_table_can_go_to_a_device(results: Path) -> None:
    assert write_table(results, TableQuery(), csv=os.devnull) == 12
    assert Path(os.devnull).is_char_device()


def test_top_must_be_positive(results: Path) -> None:
    with pytest.raises(ScorerUsageError, match="--top must be at least 1"):
        select(results, TableQuery(top=0))
