"""Runs of the real ``mcd-score`` command in a subprocess, for the fault tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from paths import REGRESSION
from PIL import Image

MODEL = REGRESSION / "model.onnx"  # the 16x16 grayscale digits CNN


MCD_SCORE = str(Path(sys.executable).parent / "mcd-score")


def images(folder: Path, count: int) -> Path:
    """``count`` 16x16 grayscale noise PNGs in ``folder``."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def score_args(root: Path, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    return [MCD_SCORE, str(root), str(out), "--model", str(MODEL), "--passes", "60", "--seed", "2",
            "--batch-size", "8", "--commit-every", "0.05", "--save-passes", *(["-q"] if quiet else []),
            *extra]
