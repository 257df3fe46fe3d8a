"""Importing the scorer must not import TensorFlow, Keras or tf2onnx."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "keras", "tf2onnx")

PROBE = """
import json, sys
import {modules}
loaded = sorted({{name.split(".")[0] for name in sys.modules}})
print(json.dumps(loaded))
"""


def loaded_after(modules: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(modules=modules)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("modules", ["scorer, scorer.cli, scorer.score",
                                     "scorer.session, scorer.compare, scorer.h5out"])
def test_scorer_does_not_import_tensorflow(modules):
    loaded = loaded_after(modules)
    assert "scorer" in loaded
    assert not loaded & set(HEAVY), f"import {modules} loaded {sorted(loaded & set(HEAVY))}"


def test_probe_sees_indirect_imports():
    """The probe works: what scorer.score imports indirectly (ONNX Runtime, h5py) is seen."""
    assert {"onnxruntime", "h5py", "numpy"} <= loaded_after("scorer.score")
