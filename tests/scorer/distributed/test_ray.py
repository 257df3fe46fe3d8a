"""mcd-score --ray on a local Ray cluster started by the test: same results as a local run, a
killed worker's shard redone, resume after an interruption, missing parts detected.

One cluster (``ray.init(num_cpus=2)``) serves the module; starting it takes 5-10 s here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import ray
from click.testing import CliRunner
from paths import REGRESSION
from PIL import Image

from scorer.cli.main import main
from scorer.distributed.driver import RayOptions, score_on_ray
from scorer.distributed.scheduler import ShardsFailed
from scorer.distributed.shards import rows_committed
from scorer.distributed.worker import UnreadableShard
from scorer.errors import OutputError, ScoreInterrupted
from scorer.images.listing import ImageRef
from scorer.results.reader import read_arrays
from scorer.rundir.folder import parts_path
from scorer.scoring import ScoreOptions, score

DATA = REGRESSION
MODEL = DATA / "model.onnx"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """120 random 16x16 PNGs in three class folders, plus the regression images' broken JPEG."""
    root = tmp_path_factory.mktemp("ray-images")
    rng = np.random.default_rng(4)
    for i in range(120):
        folder = root / f"c{i % 3}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (root / "c0" / "broken.jpg").write_bytes((DATA / "images" / "other" / "broken.jpg").read_bytes())
    return root


OPTIONS = ScoreOptions(passes=40, seed=9, save_passes=True, commit_seconds=0.05)


@pytest.fixture(scope="module")
def local_run(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.h5"
    score(images, out, MODEL, OPTIONS)
    return out


def assert_equal_results(reference: Path, other: Path) -> None:
    """Every dataset bit for bit (atol 0). The README promises the entropies only within a float32
    rounding (ONNX Runtime's vectorised Log may round by buffer position); with this model they
    come out identical whatever the shard sizes, and a difference would need looking into."""
    first, second = read_arrays(reference)[0], read_arrays(other)[0]
    assert sorted(first) == sorted(second)
    for name, values in first.items():
        np.testing.assert_array_equal(values, second[name], err_msg=name)


def test_stitched_and_consolidated_equal_a_local_run(images, local_run, tmp_path):
    stitched, plain = tmp_path / "stitched.h5", tmp_path / "plain.h5"
    summary = score_on_ray(images, stitched, MODEL, OPTIONS, RayOptions(workers=2, shard_rows=16))
    assert (summary.images, summary.failed) == (121, 1)
    assert_equal_results(local_run, stitched)
    with h5py.File(stitched) as file:
        assert file["mean"].is_virtual and len(file["mean"].virtual_sources()) == 8
        # what the workers ran on, not the driver's own CPU session
        assert file.attrs["execution_provider"] == "CPUExecutionProvider"
        assert file.attrs["shard_providers"] == "CPUExecutionProvider: 8"
    assert sorted(p.suffix for p in parts_path(stitched).iterdir()) == [".h5"] * 8
    score_on_ray(images, plain, MODEL, OPTIONS, RayOptions(workers=2, consolidate=True))
    with h5py.File(plain) as file:
        assert not file["mean"].is_virtual
    assert not parts_path(plain).exists()
    assert_equal_results(local_run, plain)


def test_the_command_line_runs_on_ray(images, local_run, tmp_path):
    out = tmp_path / "cli.h5"
    result = CliRunner().invoke(main, [str(images), str(out), "--model", str(MODEL), "--passes",
                                       "40", "--seed", "9", "--save-passes", "--ray",
                                       "--ray-workers", "2", "--shard-size", "30"])
    assert result.exit_code == 3, result.output  # the broken JPEG
    assert "running on Ray: 2 workers, 5 shards of up to 30 images" in result.stderr
    assert_equal_results(local_run, out)


def pid_scoring(shard_parts: Path) -> int | None:
    """The process scoring a shard: its OUT.parts/lock names it ("pid 123 on host, since ...")."""
    try:
        words = (shard_parts / "lock").read_text().split()
    except OSError:
        return None
    return int(words[1]) if words[:1] == ["pid"] else None


def kill_a_worker_once_rows_are_committed(out: Path, killed: list[int]) -> None:
    """SIGKILL the worker of a shard that has committed some rows but is far from done (20 of its
    60 rows at most), so that the kill always lands in the middle of a shard."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not killed:
        for running in parts_path(out).glob("*-part-*.h5.parts"):  # a shard's own OUT.parts/
            if 0 < rows_committed(running.with_suffix("")) <= 20 and (pid := pid_scoring(running)):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.01)


@pytest.fixture
def busy_machine():
    """Three processes spinning beside the test, as on a loaded batch node (2 cores here): Ray
    then takes seconds to restart a killed actor."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    yield
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def run_with_a_kill(images, model: Path, out: Path, ray_options: RayOptions):
    killed: list[int] = []
    killer = threading.Thread(target=kill_a_worker_once_rows_are_committed, args=(out, killed))
    killer.start()
    slow = ScoreOptions(**{**OPTIONS.__dict__, "passes": 40, "batch_size": 2})
    try:
        return score_on_ray(images, out, model, slow, ray_options)
    finally:
        killer.join()
        assert killed, "no worker was killed: the run ended first"


def test_a_killed_worker_is_replaced_and_the_result_is_identical(images, local_run, tmp_path):
    out = tmp_path / "killed.h5"
    summary = run_with_a_kill(images, MODEL, out, RayOptions(workers=2, shard_rows=60))
    assert any("retried" in warning for warning in summary.warnings), summary.warnings
    assert_equal_results(local_run, out)


def test_a_killed_worker_on_a_busy_machine_is_waited_for(images, local_run, tmp_path, busy_machine):
    """One worker and no retry to spare beyond the one the kill costs: the shard must wait for
    the restart (the calls Ray refuses meanwhile must not use up its retries)."""
    out = tmp_path / "busy.h5"
    summary = run_with_a_kill(images, MODEL, out, RayOptions(workers=1, shard_rows=60, retries=1))
    assert "1 shard attempts were retried" in summary.warnings
    assert_equal_results(local_run, out)


def test_a_worker_that_cannot_restart_ends_the_run_naming_the_shard(images, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(MODEL, model)
    out = tmp_path / "gone.h5"
    moved = threading.Thread(target=lambda: (wait_for_rows(out), model.unlink()))
    moved.start()  # the model goes away before the kill: the restart's constructor fails
    with pytest.raises(ShardsFailed) as caught:
        run_with_a_kill(images, model, out, RayOptions(workers=1, shard_rows=60))
    moved.join()
    message = str(caught.value)
    assert re.search(r"shard \d \(images \d+-\d+, first c\d/\d+.png\): no worker left \(worker 0: "
                     r"ActorDiedError: .*model.onnx' does not exist", message), message
    assert "run again with --resume" in message
    assert any(rows_committed(p.with_suffix("")) for p in parts_path(out).glob("*.h5.parts"))


def wait_for_rows(out: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            rows_committed(p.with_suffix("")) for p in parts_path(out).glob("*-part-*.h5.parts")):
        time.sleep(0.005)


def test_an_interrupted_run_resumes_to_the_same_result(images, local_run, tmp_path):
    out = tmp_path / "resumed.h5"
    calls = []

    def interrupt(done, total, failed):
        calls.append(done)
        if done >= 30:
            raise KeyboardInterrupt

    with pytest.raises(ScoreInterrupted, match="--resume"):
        score_on_ray(images, out, MODEL, OPTIONS, RayOptions(workers=2, shard_rows=20),
                     progress=interrupt)
    assert not out.exists() and list(parts_path(out).glob("*-part-*"))
    summary = score_on_ray(images, out, MODEL, ScoreOptions(**{**OPTIONS.__dict__, "mode": "resume"}),
                           RayOptions(workers=2, shard_rows=20))
    assert summary.resumed >= 30
    assert_equal_results(local_run, out)


def test_a_missing_part_is_detected_by_every_reader(images, tmp_path):
    out = tmp_path / "stitched.h5"
    score_on_ray(images, out, MODEL, OPTIONS, RayOptions(workers=2, shard_rows=50))
    part = sorted(parts_path(out).glob("*-part-*.h5"))[1]
    part.unlink()
    with pytest.raises(OutputError, match="1 of them are missing") as caught:
        read_arrays(out)
    assert part.name in str(caught.value)
    for command in (["compare", str(out), str(out)], ["table", str(out)], ["report", str(out)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "missing" in result.output, (command, result.output)


def test_a_worker_that_cannot_see_the_images_says_so(tmp_path):
    refs = [ImageRef("a.png", Path("/not-mounted-here/a.png"))]
    with pytest.raises(UnreadableShard, match="every node must read the images at the same path"):
        score_on_ray(refs, tmp_path / "out.h5", MODEL, OPTIONS, RayOptions(workers=1))


def test_workers_without_a_gpu_run_on_the_cpu():
    from scorer.distributed.driver import worker_device, worker_threads
    from scorer.errors import ScorerUsageError

    assert worker_device("auto", 0) == "cpu"  # Ray leaves CUDA_VISIBLE_DEVICES as it is
    assert worker_device("auto", 1) == "auto" and worker_device("cuda", 0.5) == "cuda"
    with pytest.raises(ScorerUsageError, match="--ray-gpus-per-worker"):
        worker_device("cuda", 0)
    # a CPU worker's CPUs go to ONNX Runtime, a GPU worker's to decoding
    assert worker_threads(RayOptions(cpus_per_worker=4), None) == (4, 1)
    assert worker_threads(RayOptions(cpus_per_worker=4, gpus_per_worker=1), None) == (1, 4)
    assert worker_threads(RayOptions(cpus_per_worker=4, gpus_per_worker=1), 2) == (1, 2)


def test_a_dead_workers_error_is_surfaced():
    from scorer.distributed.driver import death_reason

    text = ("The actor died because of an error raised in its creation task, ...\n"
            "Traceback (most recent call last):\n  File \"worker.py\", line 31, in __init__\n"
            "scorer.errors.DeviceError: --device cuda: CUDA is not usable here (libcuda.so.1: "
            "cannot open shared object file)")
    assert death_reason(RuntimeError(text)) == (
        ": scorer.errors.DeviceError: --device cuda: CUDA is not usable here (libcuda.so.1: "
        "cannot open shared object file)")
    assert death_reason(RuntimeError("killed by the OOM killer")) == ""
