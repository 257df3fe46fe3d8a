"""``mcd-score report`` as a Click command, run in-process with CliRunner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_support import synthetic_probabilities, with_images

from scorer.cli.main import main
from scorer.cli.report import report_command
from scorer.report import ReportOptions, write_report


def test_writes_page_and_summary(tmp_path: Path) -> None:
    results, _ = with_images(tmp_path)
    out = CliRunner().invoke(main, ["report", str(results), str(tmp_path / "page.html"),
                                              "--json-summary", str(tmp_path / "s.json"),
                                              "--ood", "ood"])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "page.html").read_text(encoding="utf-8")
    numbers = json.loads((tmp_path / "s.json").read_text())
    expected = write_report(results, None, ReportOptions(ood_labels=("ood",), write_html=False)).numbers
    assert numbers == expected
    assert html.count('<img src="data:image/png;base64,') >= 12 + 5  # 2 x 12 thumbnails, figures
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_default_html_path_is_beside_the_results(tmp_path: Path) -> None:
    results, _ = with_images(tmp_path, n=40)
    out = CliRunner().invoke(main, ["report", str(results)])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "r.html").is_file()
    assert "warning" not in out.output


def test_images_option_finds_moved_images(tmp_path: Path) -> None:
    results, images = with_images(tmp_path, n=40)
    moved = images.rename(tmp_path / "moved")
    lost = CliRunner().invoke(main, ["report", str(results), str(tmp_path / "a.html")])
    assert lost.exit_code == 0 and "give it with --images" in lost.stderr
    assert "images folder not found" in (tmp_path / "a.html").read_text()
    found = CliRunner().invoke(main, ["report", str(results), str(tmp_path / "b.html"),
                                                "--images", str(moved)])
    assert found.exit_code == 0 and "--images" not in found.stderr
    assert "images folder not found" not in (tmp_path / "b.html").read_text()


def test_json_summary_on_stdout(tmp_path: Path) -> None:
    results, _ = with_images(tmp_path, n=60)
    out = CliRunner().invoke(main, ["report", str(results), "--no-html", "--json-summary", "-",
                                              "--ood", "ood"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["ood"]["ood"] > 0
    assert not (tmp_path / "r.html").exists()


def test_missing_matplotlib_is_a_clear_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, _ = with_images(tmp_path, n=30)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = CliRunner().invoke(main, ["report", str(results)])
    assert out.exit_code == 2
    assert "pip install 'mcd-score[report]'" in out.output and "--no-html" in out.output
    numbers_only = CliRunner().invoke(main, ["report", str(results), "--no-html",
                                                       "--json-summary", str(tmp_path / "s.json")])
    assert numbers_only.exit_code == 0, numbers_only.output
    assert (tmp_path / "s.json").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["{missing}"], "does not exist"),
    (["{text}"], "not a readable HDF5 file"),
    (["{results}", "--no-html"], "--no-html writes nothing"),
    (["{results}", "{tmp}/no/such/dir/r.html"], "cannot write"),
    (["{results}", "--flag-fraction", "1.5"], "--flag-fraction"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    results = synthetic_probabilities(tmp_path / "r.h5", n=20)
    (tmp_path / "text.h5").write_text("not hdf5")
    values = {"missing": tmp_path / "none.h5", "text": tmp_path / "text.h5", "results": results,
              "tmp": tmp_path}
    out = CliRunner().invoke(main, ["report", *(a.format(**values) for a in args)])
    assert out.exit_code == 2, out.output
    assert message in out.output


def test_unknown_ood_label_is_a_warning(tmp_path: Path) -> None:
    results = synthetic_probabilities(tmp_path / "r.h5", n=20)
    out = CliRunner().invoke(main, ["report", str(results), "--no-html", "--json-summary",
                                              str(tmp_path / "s.json"), "--ood", "nope"])
    assert out.exit_code == 0
    assert "warning: --ood 'nope' matches no image label" in out.stderr


def test_is_a_command_of_mcd_score() -> None:
    assert main.commands["report"] is report_command
    out = CliRunner().invoke(main, ["report", "--help"])
    assert out.exit_code == 0 and "--ood LABEL" in out.output
