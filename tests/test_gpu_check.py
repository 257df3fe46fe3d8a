"""``scripts/gpu_check.sh``'s dry run (``--device cpu``) end to end: prepare a small folder, run
doctor, the CUDA suite with the CPU standing in, the GPU benchmark, and print the table. This
proves the script and the suite run; only a GPU proves the GPU (docs/gpu.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from paths import ROOT


def test_the_dry_run_prepares_runs_and_prints_its_table(tmp_path):
    folder = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "prepare",
                    str(folder), "--quick"], check=True, env=env, capture_output=True)
    assert sorted(p.name for p in (folder / "models").glob("*.onnx")) == [
        "cnn_dynamo.onnx", "mlp.onnx", "mobilenet_v3.onnx", "regression.onnx"]
    assert len(list((folder / "bench" / "photos").glob("*.jpg"))) == 64
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(folder), "--device",
                          "cpu"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = run.stdout[run.stdout.index("gpu_check --device cpu"):]
    assert "| doctor | ok: runs on CPUExecutionProvider" in table
    assert "| tests/cuda | 8 passed, 0 failed, 1 skipped |" in table
    assert "| bench mobilenet_v2_160 (img/s, T=50) | ort-single" in table
    bench = json.loads((folder / "bench.json").read_text())
    columns = bench["models"]["mobilenet_v2_160"]
    assert columns["mcd-e2e"] > 0 and 0 <= columns["waiting for batches"] <= 1
    assert json.loads((folder / "doctor.json").read_text())["ok"] is True
