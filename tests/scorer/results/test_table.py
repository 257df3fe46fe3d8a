"""``mcd-score table``: the results as CSV or Parquet, filtered and sorted, equal to h5py's values."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from results_support import CLASSES, write

from scorer.cli.main import main
from scorer.errors import ScorerUsageError
from scorer.results.reader import read_arrays
from scorer.results.table import TableQuery, parse_condition, select


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
