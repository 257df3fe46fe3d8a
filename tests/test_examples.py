"""The examples run as they are documented, print sane numbers and write their figures."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from paths import ROOT

EXAMPLES = ROOT / "examples"


def run(name: str, folder) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), str(folder)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def numbers(text: str, pattern: str) -> list[float]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return [float(g) for g in match.groups()]


def test_the_baked_dropout_mlp(tmp_path):
    out = run("mlp_dropout_baked", tmp_path)
    (accuracy,) = numbers(out, r"accuracy of the MC mean: ([0-9.]+)")
    right, wrong = numbers(out, r"([0-9.]+) nats when right, ([0-9.]+) when wrong")
    assert accuracy > 0.8 and wrong > right > 0
    assert (tmp_path / "mlp_std_vs_probability.png").stat().st_size > 10_000


def test_the_mnist_cnn(tmp_path):
    out = run("mnist_cnn", tmp_path)
    (accuracy,) = numbers(out, r"accuracy of the MC mean: ([0-9.]+)")
    _, above, _, below = numbers(out, r">= 0.1: (\d+) images, accuracy ([0-9.]+); below: (\d+) "
                                      r"images, accuracy ([0-9.]+)")
    assert accuracy > 0.8 and below > above
    assert {p.name for p in tmp_path.iterdir()} == {"mnist_reliability.png", "mnist_rejection.png"}


def test_sigmoid_and_softmax_binary_heads(tmp_path):
    out = run("binary_sigmoid_vs_softmax", tmp_path)
    for head in ("sigmoid", "softmax"):
        accuracy, std = numbers(out, rf"{head}: accuracy ([0-9.]+), mean std of P\(8\) ([0-9.]+)")
        assert accuracy > 0.8 and 0 < std < 0.5
        assert (tmp_path / f"binary_{head}_std_vs_p.png").exists()


def test_out_of_distribution_images_are_more_uncertain(tmp_path):
    out = run("digits_ood", tmp_path)
    groups = {name: numbers(out, rf"{name} +\d+ images: normalized entropy ([0-9.]+), mutual "
                                 r"information ([0-9.]+)") for name in ("digits", "noisy", "photos")}
    for ood in ("noisy", "photos"):
        assert groups[ood][0] > groups["digits"][0] and groups[ood][1] > groups["digits"][1]
    flagged, accuracy_flagged, accuracy_rest = numbers(
        out, r">= 0.5: (\d+), accuracy ([0-9.na]+); below: accuracy ([0-9.]+)")
    assert accuracy_rest > accuracy_flagged or flagged == 0
    assert len(list(tmp_path.glob("ood_*.png"))) == 4


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_is_shown_in_the_docs(path):
    if path.name == "data.py":
        return
    assert f"examples/{path.name}" in (ROOT / "docs" / "predict.md").read_text(encoding="utf-8")
