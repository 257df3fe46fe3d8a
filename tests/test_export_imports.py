"""The export package imports TensorFlow only where it reads or converts Keras models; the graph
passes and estimates are pure ONNX."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIGHT_MODULES = ["export", "scorer.contract", "export.errors", "export.cli", "export.hashing",
                 "export.masks", "export.reduce", "export.stochastic", "export.builder",
                 "export.graph", "export.captures", "export.erfc", "export.unsupported",
                 "export.prune", "export.cost", "export.report", "export.memory", "export.pad_pool"]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_module_does_not_import_tensorflow(module):
    code = (f"import sys, {module}\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_help_does_not_import_tensorflow():
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from export.cli import main\n"
            "result = CliRunner().invoke(main, ['--help'])\n"
            "assert result.exit_code == 0, result.output\n"
            "assert 'tensorflow' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_installed_command_runs():
    script = Path(sys.executable).parent / "mcd-export"
    if not script.exists():
        pytest.skip("the mcd-export entry point is not installed next to this Python")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Export a Keras MODEL" in result.stdout
