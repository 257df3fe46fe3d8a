"""The product's own regression test, written the way its users write theirs.

A small exported model and a few images are committed under tests/data/regression/ with their
reference result; scoring them again must reproduce it (``mcd-score compare`` exits 0). This guards
against unintended drift; correctness is covered by the other tests. To change the reference on
purpose, run ``python scripts/make_reference.py`` and say why in the commit.
"""

from pathlib import Path

from click.testing import CliRunner
from paths import REGRESSION

from scorer.cli.main import main

DATA = REGRESSION
PASSES = 30
SEED = 7


def test_scores_match_committed_reference(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "new.h5"
    scored = runner.invoke(main, [str(DATA / "images"), str(out), "--model", str(DATA / "model.onnx"),
                                  "--passes", str(PASSES), "--seed", str(SEED), "--device", "cpu",
                                  "--quiet"])
    assert scored.exit_code == 3, scored.output  # the committed broken.jpg fails on purpose
    compared = runner.invoke(main, ["compare", str(DATA / "reference.h5"), str(out)])
    assert compared.exit_code == 0, compared.output
    assert "OK" in compared.output


def test_compare_catches_a_different_seed(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "other_seed.h5"
    runner.invoke(main, [str(DATA / "images"), str(out), "--model", str(DATA / "model.onnx"),
                         "--passes", str(PASSES), "--seed", str(SEED + 1), "--device", "cpu", "-q"])
    compared = runner.invoke(main, ["compare", str(DATA / "reference.h5"), str(out)])
    assert compared.exit_code == 1, compared.output
    assert "seed" in compared.output
