"""The first GPU run in one command: ``doctor``, the CUDA test suite and the GPU benchmark, one
summary table. Driven by ``scripts/gpu_check.sh``; see docs/gpu.md.

``prepare DIR`` (on a machine with the export extra, i.e. TensorFlow): everything the GPU machine
cannot make itself, since it may have no TensorFlow and no network:

- ``DIR/models``: mcd-export graphs the CUDA tests run (the regression model, the PyTorch fixtures);
- ``DIR/photos``: the regression images (the tests' end-to-end runs);
- ``DIR/bench``: for each benchmark model (MobileNetV2 160 and ResNet50 224 with dropout heads,
  weights=None) its MC graph and its plain deterministic graph, and 1,024 JPEG photographs;
- ``DIR/wheels``: onnxruntime-gpu and simplejpeg wheels for the GPU machine's Python (``--wheels``).

``run DIR [--device cuda|cpu]`` (on the GPU machine, from a checkout): doctor (``DIR/doctor.json``),
``tests/cuda`` (``DIR/cuda-tests.xml``), the benchmark (``DIR/bench.json``), then the table.
``--device cpu`` is the dry run: the same steps on the CPU, to prove the script, not the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
BENCH_MODELS = {"mobilenet_v2_160": 160, "resnet50_224": 224}
PASSES = 50
WHEELS = ("onnxruntime-gpu==1.31.1", "simplejpeg")


def prepare(folder: Path, quick: bool, wheels: bool, python_version: str) -> None:
    """See the module docstring; ``quick`` (the CI dry run): the small bench model only, 64
    photographs."""
    from export.from_onnx import front
    from export.options import ExportOptions

    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests" / "data" / "regression" / "model.onnx", models / "regression.onnx")
    torch_options = {"mlp": {"head": "softmax"}, "cnn_dynamo": {"head": "softmax"},
                     "mobilenet_v3": {"preprocessing": "torchvision"}}
    for name, options in torch_options.items():
        source = front.load(ROOT / "tests" / "data" / "torch" / f"{name}.onnx")
        result = front.build(source, ExportOptions(validate=False, **options))
        (models / f"{name}.onnx").write_bytes(result.model.SerializeToString())
    shutil.copytree(ROOT / "tests" / "data" / "regression" / "images", folder / "photos",
                    dirs_exist_ok=True)
    bench = folder / "bench"
    bench.mkdir(exist_ok=True)
    from bench import write_photos

    write_photos(bench / "photos", 64 if quick else 1024)
    for name, size in BENCH_MODELS.items():
        if quick and name != "mobilenet_v2_160":
            continue
        if not (bench / f"{name}.onnx").exists():
            bench_model(name, size, bench, small=quick)
    if wheels:
        (folder / "wheels").mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", python_version, "-d", str(folder / "wheels"),
                        *WHEELS], check=True)
    print(f"prepared {folder}")


def bench_model(name: str, size: int, bench: Path, small: bool = False) -> None:
    """A keras.applications backbone with a dropout head: its MC graph and its plain graph."""
    import keras
    import tensorflow as tf
    import tf2onnx

    from export.api import build, save
    from export.options import ExportOptions

    keras.utils.set_random_seed(0)
    layers = keras.layers
    size = 96 if small else size
    application = (keras.applications.MobileNetV2 if name.startswith("mobilenet")
                   else keras.applications.ResNet50)
    backbone = application(input_shape=(size, size, 3), include_top=False, weights=None,
                           pooling="avg")
    inputs = keras.Input((size, size, 3))
    outputs = layers.Dense(10, activation="softmax")(layers.Dropout(0.3)(backbone(inputs)))
    model = keras.Model(inputs, outputs)
    scaling = {"scale": 1 / 127.5, "offset": -1.0}
    save(build(model, ExportOptions(validation_passes=20, **scaling)).model, bench / f"{name}.onnx")
    spec = [tf.TensorSpec((None, size, size, 3), tf.float32, name="images")]
    forward = tf.function(lambda images: model(images, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=17)
    (bench / f"{name}.plain.onnx").write_bytes(proto.SerializeToString())


def run(folder: Path, device: str) -> int:
    """doctor, the CUDA tests, the benchmark, the table; exit status 0 when all passed."""
    started = time.monotonic()
    env = {**os.environ, "MCD_GPU_CHECK_DIR": str(folder), "MCD_GPU_CHECK_DEVICE": device,
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)}
    env.pop("MCD_SCORE_DEVICE", None)
    doctor = subprocess.run([sys.executable, "-c", "from scorer.cli.main import main; main()",
                             "doctor", "--json", "--device", device, "--model",
                             str(folder / "models" / "regression.onnx")],
                            capture_output=True, text=True, env=env)
    (folder / "doctor.json").write_text(doctor.stdout)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(ROOT / "tests" / "cuda"), "-rs", "--junitxml",
                            str(folder / "cuda-tests.xml")], env=env, cwd=ROOT)
    bench = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), str(folder),
                            "--device", device, "--json", str(folder / "bench.json")], env=env)
    print()
    for line in summary(folder, device, doctor.returncode, time.monotonic() - started):
        print(line)
    return 0 if doctor.returncode == tests.returncode == bench.returncode == 0 else 1


def summary(folder: Path, device: str, doctor_code: int, seconds: float) -> list[str]:
    """The table: doctor's verdict, the tests' counts, the benchmark's rows."""
    rows = [f"gpu_check --device {device} ({seconds:.0f} s)", "", "| check | result |",
            "|---|---|"]
    try:
        report = json.loads((folder / "doctor.json").read_text())
        cuda = report["providers"]["cuda"]
        gpus = ", ".join(g["name"] for g in cuda.get("gpus", [])) or "none"
        rows.append(f"| doctor | {'ok' if doctor_code == 0 else 'FAILED'}: runs on "
                    f"{report['runs_on']}; CUDA {'loads' if cuda['loads'] else 'does not load'}; "
                    f"GPUs: {gpus} |")
        for provider, entry in report["self_test"].items():
            rows.append(f"| self-test {provider} | {'ok' if entry.get('ok') else 'FAILED'} "
                        f"{_numbers(entry)} |")
    except (OSError, ValueError, KeyError) as error:
        rows.append(f"| doctor | no report ({error}) |")
    try:
        suite = ElementTree.parse(folder / "cuda-tests.xml").getroot().find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        failed = counts["failures"] + counts["errors"]
        passed = counts["tests"] - failed - counts["skipped"]
        rows.append(f"| tests/cuda | {passed} passed, {failed} failed, {counts['skipped']} "
                    "skipped |")
    except (OSError, ElementTree.ParseError, AttributeError) as error:
        rows.append(f"| tests/cuda | no report ({error}) |")
    try:
        bench = json.loads((folder / "bench.json").read_text())
        for name, columns in bench["models"].items():
            text = ", ".join(f"{k} {v:,.1f}" for k, v in columns.items() if isinstance(v, float))
            rows.append(f"| bench {name} (img/s, T={bench['passes']}) | {text} |")
    except (OSError, ValueError, KeyError) as error:
        rows.append(f"| bench | no report ({error}) |")
    return rows


def _numbers(entry: dict) -> str:
    parts = [f"{k} {v:.2g}" for k, v in entry.items() if k.startswith("max_abs")]
    if "images_passes_per_s" in entry:
        parts.append(f"{entry['images_passes_per_s']:,.0f} image-passes/s")
    return "(" + ", ".join(parts) + ")" if parts else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare")
    prep.add_argument("folder", type=Path)
    prep.add_argument("--quick", action="store_true", help="the dry run's small set")
    prep.add_argument("--wheels", action="store_true", help="download the GPU machine's wheels")
    prep.add_argument("--python-version", default="3.12")
    go = commands.add_parser("run")
    go.add_argument("folder", type=Path)
    go.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.folder, args.quick, args.wheels, args.python_version)
    else:
        sys.exit(run(args.folder, args.device))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
