"""TensorFlow, Keras and tf2onnx are imported only by the exporter's Keras side, Ray only when a
``--ray`` run starts, matplotlib only when a report draws.

One subprocess imports every light module in turn (every module of the two packages, found by
walking them, except the Keras side) and records what each one pulled in, so a module that
imports TensorFlow (directly or not) is named; the same process runs both commands' help and
checks the installed entry points.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import export
import scorer

HEAVY = ("tensorflow", "keras", "tf2onnx", "ray", "matplotlib")
KERAS_SIDE = ("export.in_memory", "export.from_keras")
"""Modules that import TensorFlow on purpose: the Keras front end and the notebook entry point."""


def all_modules() -> list[str]:
    """Every module of the scorer and exporter packages, sub-packages included."""
    names = ["scorer", "export"]
    for package in (scorer, export):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    return names


def light_modules() -> list[str]:
    return [name for name in all_modules()
            if not any(name == side or name.startswith(f"{side}.") for side in KERAS_SIDE)]


PROBE = """
import importlib, json, sys
from click.testing import CliRunner
loaded = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    loaded[name] = sorted({m.split(".")[0] for m in sys.modules})
import export.cli, scorer.cli.main
for command in (export.cli.main, scorer.cli.main.main):
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0, result.output
loaded["--help"] = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps(loaded))
"""


def test_the_walk_finds_every_module_file():
    files = {p for root in ("scorer", "export") for p in (Path(scorer.__file__).parents[1] / root)
             .rglob("*.py")}
    assert len(all_modules()) == len(files)


def test_light_modules_and_help_do_not_import_tensorflow():
    modules = light_modules()
    assert "scorer.results.reader" in modules and "export.rewrites.stochastic" in modules
    result = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for name, found in loaded.items():
        assert not set(HEAVY) & set(found), f"{name} loaded {sorted(set(HEAVY) & set(found))}"
    # the probe sees indirect imports: what scorer.scoring pulls in (ONNX Runtime, h5py) is there
    assert {"onnxruntime", "h5py", "numpy"} <= set(loaded["scorer.scoring"])
    assert "onnxruntime" not in loaded["scorer"], "import scorer stays light"


def test_the_installed_commands_run():
    for command, text in (("mcd-export", "Export MODEL to OUT.onnx"), ("mcd-score", "Scoring options")):
        script = Path(sys.executable).parent / command
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert text in result.stdout
