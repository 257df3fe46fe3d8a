"""TensorFlow, Keras and tf2onnx are imported only where the exporter converts (export.convert),
and Ray only when a ``--ray`` run starts.

One subprocess imports every light module in turn and records what each one pulled in, so a
module that imports TensorFlow (directly or not) is named; the same process runs both commands'
help and checks the installed entry points.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("tensorflow", "keras", "tf2onnx", "ray", "matplotlib")  # ray: when a --ray run starts;
# matplotlib: when a report draws its figures
SCORER = ["scorer", "scorer.cli", "scorer.scoring", "scorer.session", "scorer.compare", "scorer.reader",
          "scorer.merge", "scorer.isolate", "scorer.distributed.driver", "scorer.report",
          "scorer.report.command", "scorer.report.api",
          "scorer.table", "scorer.rundir", "scorer.h5write", "scorer.pipeline", "scorer.metrics",
          "scorer.contract", "scorer.progress"]
EXPORT_LIGHT = ["export", "export.errors", "export.cli", "export.hashing", "export.masks",
                "export.reduce", "export.stochastic", "export.builder", "export.graph",
                "export.captures", "export.erfc", "export.unsupported", "export.prune", "export.cost",
                "export.report", "export.memory", "export.pad_pool", "export.probe"]
PROBE = """
import importlib, json, sys
from click.testing import CliRunner
loaded = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    loaded[name] = sorted({m.split(".")[0] for m in sys.modules})
import export.cli, scorer.cli
for command in (export.cli.main, scorer.cli.main):
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0, result.output
loaded["--help"] = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps(loaded))
"""


def test_light_modules_and_help_do_not_import_tensorflow():
    result = subprocess.run([sys.executable, "-c", PROBE, *SCORER, *EXPORT_LIGHT], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for name, modules in loaded.items():
        assert not set(HEAVY) & set(modules), f"{name} loaded {sorted(set(HEAVY) & set(modules))}"
    # the probe sees indirect imports: what scorer.scoring pulls in (ONNX Runtime, h5py) is there
    assert {"onnxruntime", "h5py", "numpy"} <= set(loaded["scorer.scoring"])
    assert "onnxruntime" not in loaded["scorer"], "import scorer stays light"


def test_the_installed_commands_run():
    for command, text in (("mcd-export", "Export a Keras MODEL"), ("mcd-score", "Scoring options")):
        script = Path(sys.executable).parent / command
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert text in result.stdout
