"""The report on files written by the real scorer: a digits model, digits, photographs, bad files.

A miniature of the demo: held-out digits in class folders, photographs and noise as the ``ood``
label, broken files. The numbers must equal independent computations from the raw file, and the
committed regression reference (the product's own output) must report without surprises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from paths import REGRESSION
from PIL import Image
from report_support import assert_summary_matches, expected_summary
from scorer_support import OUTPUT_NAMES, exported_model, write_bad_files, write_digits, write_photos

from scorer.report import ReportOptions, write_report

REFERENCE = REGRESSION / "reference.h5"


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    from scorer.scoring import ScoreOptions, score

    model = exported_model(tmp_path_factory, "digits")
    root = tmp_path_factory.mktemp("report-scored") / "images"
    write_digits(root, per_class=8, classes=10, start=100)
    photos = write_photos(root / "ood")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(root / "ood" / f"noise{i}.png")
    write_bad_files(root / "broken")
    out = root.parent / "scores.h5"
    score(root, out, model, ScoreOptions(passes=30, seed=3, device="cpu"))
    assert len(photos) == 3
    return out


def test_numbers_equal_independent_computations(scored: Path) -> None:
    numbers = write_report(scored, None, ReportOptions(ood_labels=("ood",), write_html=False)).numbers
    assert numbers["classification"]["images"] == 80
    assert (numbers["ood"]["in_distribution"], numbers["ood"]["ood"]) == (80, 8)
    assert numbers["failures"] == {"empty file": 1, "not an image": 1, "truncated": 1}
    assert numbers["labels"]["other_labels"] == {}
    assert_summary_matches(numbers, expected_summary(scored), tolerance=1e-7)


def test_page_shows_the_scored_images(scored: Path, tmp_path: Path) -> None:
    summary = write_report(scored, tmp_path / "r.html", ReportOptions(ood_labels=("ood",)))
    assert summary.warnings == []
    html = summary.html_path.read_text(encoding="utf-8")
    assert "images folder not found" not in html and "cannot read the image" not in html
    assert html.count('class="tile"') == 24
    assert "broken/truncated.jpg" in html


def test_regression_reference_reports(tmp_path: Path) -> None:
    """The committed output of the real scorer: digit classes "0".."9", photographs in other/."""
    summary = write_report(REFERENCE, tmp_path / "ref.html",
                           ReportOptions(ood_labels=("other",), json_summary=tmp_path / "ref.json"))
    numbers = summary.numbers
    assert numbers["results"]["rows"] == 15 and numbers["failures"] == {"truncated": 1}
    assert numbers["labels"]["ood"] == 2 and numbers["labels"]["class"] == 12
    assert_summary_matches(numbers, expected_summary(REFERENCE, ("other",)), tolerance=1e-7)


def test_thumbnails_of_files_whose_names_are_not_utf8_load(tmp_path: Path) -> None:
    """The report opened ``folder / path``, where ``path`` is display text with \\xNN escapes:
    such files showed 'cannot read the image'. It opens the exact name (path_bytes_hex)."""
    import os

    from scorer.report.columns import read_table
    from scorer.report.load import ResultsReader
    from scorer.report.thumbs import gallery
    from scorer.scoring import ScoreOptions, score

    root = tmp_path / "images"
    write_digits(root, per_class=1, classes=2)
    odd = root / os.fsdecode(b"caf\xe9.png")
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(odd)
    out = tmp_path / "scores.h5"
    score(root, out, REGRESSION / "model.onnx",
          ScoreOptions(passes=5, device="cpu"))
    with ResultsReader(out) as reader:
        table = read_table(reader)
        tiles = gallery(reader, table, list(range(reader.info.rows)), root)
    odd_tiles = [tile for tile in tiles if "\\xe9" in tile.path]
    assert len(odd_tiles) == 1 and len(tiles) == 3
    assert all(tile.image and tile.problem is None for tile in tiles)


@pytest.mark.parametrize("name, title", [("regression", "Per output"), ("multilabel", "Per label")])
def test_the_names_of_outputs_and_labels_reach_the_page_and_the_json(tmp_path_factory, tmp_path,
                                                                      name, title) -> None:
    """A values head's names are its ``output`` coordinate (not ``class``): read through the one
    reader of results files, they name the rows of the per-output table and the JSON."""
    import json

    import h5py

    from scorer.scoring import ScoreOptions, score

    root = tmp_path / "images"
    write_digits(root, per_class=2, classes=3)
    out = tmp_path / f"{name}.h5"
    score(root, out, exported_model(tmp_path_factory, name), ScoreOptions(passes=10, device="cpu"))
    with h5py.File(out, "r") as file:  # the writer put the names on the file's own coordinate
        assert file["output" if name == "regression" else "class"].asstr()[()].tolist() == \
            list(OUTPUT_NAMES[name])
    summary = write_report(out, tmp_path / "r.html", ReportOptions(json_summary=tmp_path / "r.json"))
    written = json.loads((tmp_path / "r.json").read_text())
    assert [row["name"] for row in written["outputs"]] == list(OUTPUT_NAMES[name])
    assert [row["name"] for row in summary.numbers["outputs"]] == list(OUTPUT_NAMES[name])
    html = summary.html_path.read_text(encoding="utf-8")
    table = html[html.index(f"<h2>{title}</h2>"):]
    for output in OUTPUT_NAMES[name]:
        assert f"<td>{output}</td>" in table
    assert "output 0" not in html

