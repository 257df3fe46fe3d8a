"""Peak memory and wall time of ``mcd-export`` on keras.applications backbones, validation on.

    python scripts/bench_export.py [--size 224] [--validation-passes 200] [--max-memory 2048]

Each model (random weights, a GlobalAveragePooling/Dropout(0.3)/Dense(10) head) is saved as a
``.keras`` file; then each export runs as ``mcd-export`` would, in a fresh Python process, which
reports its own peak resident memory (VmHWM) and wall time. The anchor, measured the same way, is a
process that only imports the exporter and loads the model: the export's peak is also given as a
ratio to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name -> (keras.applications class, extra mcd-export arguments)
RUNS = {
    "resnet50": ("ResNet50", []),
    "efficientnet_b0": ("EfficientNetB0", []),
    "efficientnet_b0 head only": ("EfficientNetB0", ["--mc-layers", "head_dropout"]),
}

CHILD = """
import json, sys, time
start = time.perf_counter()
from pathlib import Path
args = json.loads(sys.argv[1])
if args["export"]:
    from export.cli import main
    main(args["cli"], standalone_mode=False)
else:
    from export.from_keras.loading import load_model
    load_model(Path(args["cli"][0]))
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
peak = int(status["VmHWM"].split()[0]) * 1024
print(json.dumps({"seconds": seconds, "peak": peak}))
"""


def save_model(application: str, size: int, path: Path) -> None:
    """Build the backbone with a dropout head (random weights) and save it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(0)
    backbone = getattr(keras.applications, application)(
        input_shape=(size, size, 3), weights=None, include_top=False)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    x = keras.layers.Dropout(0.3, name="head_dropout")(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)


def run_child(cli: list[str], export: bool) -> dict:
    """Run the exporter (or only the model load) in a fresh process; its time and VmHWM."""
    payload = json.dumps({"cli": cli, "export": export})
    result = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cli)}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--validation-passes", type=int, default=200)
    parser.add_argument("--max-memory", type=int, default=2048)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    options = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
          f"{options.size}x{options.size}, validation passes {options.validation_passes}, "
          f"--max-memory {options.max_memory}")
    header = (f"{'run':<26} {'anchor MiB':>10} {'peak MiB':>9} {'peak/anchor':>11} "
              f"{'export s':>9}")
    print(header)
    with tempfile.TemporaryDirectory() as work:
        saved: dict[str, Path] = {}
        for name in options.runs.split(","):
            application, extra = RUNS[name]
            if application not in saved:
                saved[application] = Path(work) / f"{application}.keras"
                save_model(application, options.size, saved[application])
            source = saved[application]
            anchor = run_child([str(source)], export=False)
            cli = [str(source), str(Path(work) / "out.onnx"), "-q", "--validation-passes",
                   str(options.validation_passes), "--max-memory", str(options.max_memory), *extra]
            started = time.perf_counter()
            run = run_child(cli, export=True)
            wall = time.perf_counter() - started
            print(f"{name:<26} {anchor['peak'] / 2**20:>10.0f} {run['peak'] / 2**20:>9.0f} "
                  f"{run['peak'] / anchor['peak']:>11.2f} {wall:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
