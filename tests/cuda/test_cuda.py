"""mcd-score on CUDA: every node on the GPU, the CPU's numbers, fixed call shapes, the bound
path, faults and resume, the memory plan, Ray with GPUs, and doctor.

Not run on the project's machines (no GPU): collected and skipped with the reason. Run with
``scripts/gpu_check.sh`` on a GPU machine; ``MCD_GPU_CHECK_DEVICE=cpu`` is its dry run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cuda_support import DEVICE, PROVIDER

from scorer.contract import OUTPUT_PASSES
from scorer.model.passes import plan, run_passes
from scorer.model.session import BoundRunner, open_session
from scorer.results.reader import read_arrays
from scorer.scoring import ScoreOptions, score

DEVICE_TOLERANCE = 1e-6  # per-pass outputs, CUDA (TF32 off) vs CPU
ENTROPY_TOLERANCE = 1e-5  # entropies: float32 logs in another order
ROOT = Path(__file__).resolve().parents[2]


def random_images(session, count: int, seed: int = 0) -> np.ndarray:
    shape = [count, *session.metadata.input_shape[1:]]
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_every_node_runs_on_cuda(models):
    from scorer.doctor import _all_on_cuda

    if DEVICE == "cpu":
        pytest.skip("the dry run has no CUDA placement to check")
    for name, path in models.items():
        ok, error = _all_on_cuda(path)
        assert ok, f"{name}: {error}"


def test_per_pass_outputs_equal_the_cpu(models):
    for name, path in models.items():
        gpu, cpu = open_session(path, DEVICE), open_session(path, "cpu")
        assert gpu.provider == PROVIDER
        assert gpu.provider_options.get("use_tf32", "0") == "0" or DEVICE == "cpu"
        images = random_images(cpu, 8)
        outputs = [OUTPUT_PASSES, *cpu.stat_outputs()]
        on_gpu = gpu.run(images, 5, 0, 20, outputs)
        on_cpu = cpu.run(images, 5, 0, 20, outputs)
        diff = np.abs(on_gpu[OUTPUT_PASSES] - on_cpu[OUTPUT_PASSES]).max()
        assert diff <= DEVICE_TOLERANCE, (name, diff)  # the same masks: a mask flip moves >1e-3
        np.testing.assert_allclose(on_gpu["pass_sum"], on_cpu["pass_sum"], atol=20 * DEVICE_TOLERANCE)


def test_the_bound_path_equals_a_plain_run(models):
    session = open_session(models["regression"], DEVICE)
    images = random_images(session, 6, 1)
    runner = session.runner(images)
    assert isinstance(runner, BoundRunner) or DEVICE == "cpu"
    outputs = session.stat_outputs()
    bound = [runner(3, start, 10, outputs) for start in (0, 10)]
    from scorer.contract import feeds

    for start, got in zip((0, 10), bound, strict=True):
        plain = dict(zip(outputs, session.session.run(outputs, feeds(images, 3, start, 10)),
                         strict=True))
        for name in outputs:
            np.testing.assert_array_equal(got[name], plain[name], err_msg=name)


def test_batch_size_does_not_change_the_numbers_on_cuda(models, photos, tmp_path):
    """Batch 7 and batch 128 give the same bits: every call has one shape (padding)."""
    runs = []
    for batch in (7, 128):
        out = tmp_path / f"b{batch}.h5"
        score(photos, out, models["regression"],
              ScoreOptions(passes=30, seed=1, device=DEVICE, batch_size=batch, save_passes=True))
        runs.append(read_arrays(out)[0])
    for name, values in runs[0].items():
        np.testing.assert_array_equal(values, runs[1][name], err_msg=name)


def test_cuda_results_compare_with_the_cpu_reference(models, photos, tmp_path):
    from scorer.results.compare import compare_results

    gpu, cpu = tmp_path / "gpu.h5", tmp_path / "cpu.h5"
    for out, device in ((gpu, DEVICE), (cpu, "cpu")):
        score(photos, out, models["regression"], ScoreOptions(passes=30, seed=2, device=device))
    comparison = compare_results(cpu, gpu, atol=DEVICE_TOLERANCE, rtol=ENTROPY_TOLERANCE)
    assert comparison.ok, comparison


def test_the_plan_honours_max_memory_on_cuda(models):
    session = open_session(models["mobilenet_v3"], DEVICE, max_memory_mb=64)
    chosen = plan(session.metadata, 50, 64, None, session.provider)
    meta = session.metadata
    per_call = chosen.batch_size * (meta.bytes_per_image + chosen.pass_chunk * meta.bytes_per_image_pass)
    assert per_call <= 64 * 2**20 and 50 % chosen.pass_chunk == 0
    if DEVICE == "cuda":
        assert session.provider_options["gpu_mem_limit"] == str(64 * 2**20)
    stats, _ = run_passes(session, random_images(session, 3), 50, 0, False, chosen)
    assert stats.count == 50


def test_kill_and_resume_on_cuda_equal_an_uninterrupted_run(models, photos, tmp_path):
    env = {**os.environ, "MCD_SCORE_DEVICE": DEVICE, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", "from scorer.cli.main import main; main()", str(photos)]
    common = ["--model", str(models["regression"]), "--passes", "4000", "--device", DEVICE,
              "--commit-every", "0.05", "-q", "--workers", "0", "--batch-size", "1"]
    finished = (0, 3)  # 3: done, some images (the regression set's broken ones) failed
    assert subprocess.run([*command, str(tmp_path / "whole.h5"), *common],
                          env=env).returncode in finished
    victim = subprocess.Popen([*command, str(tmp_path / "cut.h5"), *common], env=env)
    parts = tmp_path / "cut.h5.parts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(parts.rglob("*.npz")) and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    if not (tmp_path / "cut.h5").exists():  # killed before it finished (else nothing to resume)
        assert subprocess.run([*command, str(tmp_path / "cut.h5"), *common, "--resume"],
                              env=env).returncode in finished
    whole, cut = read_arrays(tmp_path / "whole.h5")[0], read_arrays(tmp_path / "cut.h5")[0]
    for name, values in whole.items():
        np.testing.assert_array_equal(values, cut[name], err_msg=name)


def test_ray_with_a_gpu_per_worker(models, photos, tmp_path):
    ray = pytest.importorskip("ray")
    from scorer.distributed.driver import RayOptions, score_on_ray

    gpus = 0 if DEVICE == "cpu" else 1
    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray.h5"
        score_on_ray(photos, out, models["regression"], ScoreOptions(passes=20, device=DEVICE),
                     RayOptions(workers=1, gpus_per_worker=gpus, shard_rows=4))
    finally:
        ray.shutdown()
    attrs = read_arrays(out)[1]
    assert attrs["execution_provider"] == PROVIDER
    local = tmp_path / "local.h5"
    score(photos, local, models["regression"], ScoreOptions(passes=20, device=DEVICE))
    first, second = read_arrays(local)[0], read_arrays(out)[0]
    for name in ("mean", "std", "predicted_class"):
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_doctor_on_cuda():
    run = subprocess.run([sys.executable, "-c", "from scorer.cli.main import main; main()",
                          "doctor", "--json", "--device", DEVICE], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = json.loads(run.stdout)
    assert run.returncode == 0, report
    assert report["runs_on"] == PROVIDER
    entry = report["self_test"][PROVIDER]
    assert entry["ok"], entry
