"""``mcd-score doctor`` on this CPU machine, where onnxruntime-gpu lists CUDA but cannot load it:
the diagnosis, the JSON, the exit codes, the self-test, and the CUDA loader's steps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from paths import REGRESSION

from scorer import doctor
from scorer.cli.main import main
from scorer.model import cuda
from scorer.model.session import CPU, CUDA

KEYS = {"requested_device", "versions", "providers", "self_test", "model", "runs_on", "ok"}
NVIDIA_WHEELS = importlib.util.find_spec("nvidia") is not None  # the [cuda] extra's libraries


@pytest.fixture(scope="module")
def report():
    return doctor.diagnose()


def test_the_report_has_stable_keys(report):
    assert set(report) == KEYS
    assert {"python", "numpy", "h5py", "Pillow", "simplejpeg", "mcd-score"} <= set(report["versions"])
    assert "onnxruntime-gpu" in report["versions"] or "onnxruntime" in report["versions"]
    assert json.loads(json.dumps(report)) == report


def test_cuda_is_listed_but_does_not_load_and_says_why(report):
    cuda_report = report["providers"]["cuda"]
    assert CUDA in report["providers"]["listed"] and cuda_report["listed"]
    assert not cuda_report["loads"]
    assert cuda_report["missing_library"] in (*cuda.LIBRARIES, cuda.DRIVER)
    assert cuda_report["missing_library"] in cuda_report["error"]
    assert not cuda_report["driver"]["present"] and cuda.DRIVER in cuda_report["driver"]["error"]
    assert "NVIDIA driver" in cuda_report["remedy"]


@pytest.mark.skipif(NVIDIA_WHEELS, reason="the [cuda] extra's libraries are installed here")
def test_without_the_cuda_extra_the_libraries_are_named(report):
    cuda_report = report["providers"]["cuda"]
    assert cuda_report["missing_library"] == "libcublasLt.so.13"
    assert {"libcublas.so.13", "libcublasLt.so.13", "libcudnn.so.9"} <= set(
        cuda_report["missing_libraries"])
    assert 'pip install "mcd-score[cuda]"' in cuda_report["remedy"]


@pytest.mark.skipif(not NVIDIA_WHEELS, reason="needs the [cuda] extra's nvidia-* wheels")
def test_with_the_cuda_extra_the_error_moves_to_the_driver(report):
    """Preloading the pip-installed libraries leaves only the driver missing."""
    cuda_report = report["providers"]["cuda"]
    assert cuda_report["missing_libraries"] == []
    assert cuda_report["missing_library"] == cuda.DRIVER
    assert "mcd-score[cuda]" not in cuda_report["remedy"]


def test_the_cpu_self_test_matches_keras(report):
    entry = report["self_test"][CPU]
    assert entry["ok"] and entry["max_abs_diff_vs_keras"] <= doctor.KERAS_TOLERANCE
    assert entry["images_passes_per_s"] > 0
    assert CUDA not in report["self_test"]
    assert (report["runs_on"], report["ok"]) == (CPU, True)


def test_a_self_test_that_disagrees_fails(tmp_path, monkeypatch):
    data = json.loads((doctor.DATA / "selftest.json").read_text())
    data["keras_passes"][0][0][0] += 0.01  # one output of one pass, off by 1e-2
    (tmp_path / "selftest.json").write_text(json.dumps(data))
    (tmp_path / "selftest.onnx").write_bytes(doctor.SELFTEST.read_bytes())
    monkeypatch.setattr(doctor, "DATA", tmp_path)
    entry = doctor.self_test([CPU])[CPU]
    assert not entry["ok"] and 0.009 < entry["max_abs_diff_vs_keras"] < 0.011


def test_a_cuda_that_loads_but_fails_its_self_test_is_not_used(monkeypatch):
    monkeypatch.setattr(doctor, "_cuda_error", lambda: "")  # as if the provider had loaded
    report = doctor.diagnose(device="auto")
    assert report["providers"]["cuda"]["loads"]
    assert not report["self_test"][CUDA]["ok"] and "CUDA" in report["self_test"][CUDA]["error"]
    assert report["runs_on"] == CPU
    assert doctor.diagnose(device="cuda")["ok"] is False


@pytest.mark.parametrize(("args", "code"), [([], 0), (["--device", "cpu"], 0),
                                            (["--device", "cuda"], 1)])
def test_exit_codes(args, code):
    result = CliRunner().invoke(main, ["doctor", *args])
    assert result.exit_code == code, result.output
    assert result.output.splitlines()[-1].startswith(f"--device {args[1] if args else 'auto'}:")
    assert "CUDA: does not load:" in result.output and "remedy:" in result.output


def test_json_and_the_users_model():
    result = CliRunner().invoke(main, ["doctor", "--json", "--model", str(REGRESSION / "model.onnx"),
                                       "--passes", "30", "--max-memory", "64"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == KEYS
    entry = report["model"]["providers"][CPU]
    assert entry["ok"] and entry["plan"]["passes"] == 30 and entry["plan"]["max_memory_mb"] == 64
    assert entry["plan"]["batch_size"] >= 1 and 1 <= entry["plan"]["pass_chunk"] <= 30


def test_a_file_that_is_not_a_model(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    result = CliRunner().invoke(main, ["doctor", "--model", str(tmp_path / "x.onnx")])
    assert result.exit_code == 0  # the machine works; the model's entry says why it does not
    assert "model on CPU: failed:" in result.output


def test_loader_errors_are_read():
    error = ("Failed to load library libonnxruntime_providers_cuda.so with error: "
             "libcudnn.so.9: cannot open shared object file: No such file or directory")
    assert cuda.missing_library(error) == "libcudnn.so.9"
    assert cuda.missing_library("something else") is None
    assert "mcd-score[cuda]" in cuda.remedy(error)
    assert "NVIDIA driver" in cuda.remedy("libcuda.so.1: cannot open shared object file")


def test_the_self_test_graph_ships_with_the_package():
    assert doctor.SELFTEST.is_file() and doctor.SELFTEST.stat().st_size < 64_000
    assert Path(doctor.__file__).parent / "data" == doctor.DATA
