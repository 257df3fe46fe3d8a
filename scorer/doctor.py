"""``mcd-score doctor``: what this machine can run, and why.

:func:`diagnose` collects, as one JSON-ready dict with stable keys:

- ``versions``: Python, numpy, the onnxruntime package (``onnxruntime-gpu`` or ``onnxruntime``), h5py,
  Pillow, simplejpeg, mcd-score;
- ``providers``: the execution providers ONNX Runtime lists, and for CUDA whether it loads; when it
  does not, the library the loader could not open (its own error), every CUDA 13 / cuDNN 9 library
  that is missing after :func:`scorer.model.cuda.preload`, whether an NVIDIA driver is there and
  the remedy; when it loads, the GPUs' names and memory;
- ``self_test``: the graph shipped in ``scorer/data`` (a tiny Keras CNN with BatchNorm and dropout)
  run on every usable provider: its passes 0..2 against Keras' own outputs with the same masks
  (within 1e-5), CUDA's passes against the CPU's (within 1e-6), and images x passes per second;
- ``model`` (with ``--model``): the same on the user's graph, whether every node runs on CUDA
  (``session.disable_cpu_ep_fallback``), and the plan the scorer would use on each device.

``ok`` says whether the requested device works: ``cpu`` when the CPU self-test passes, ``cuda``
when CUDA loads and its self-test passes, ``auto`` when the device ``auto`` picks does.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from scorer.contract import OUTPUT_PASSES
from scorer.errors import DeviceError, ModelError
from scorer.images.arrays import as_inputs
from scorer.model import cuda as cuda_libraries
from scorer.model.passes import memory_budget, plan
from scorer.model.session import CPU, CUDA, ScoringSession, captured_stderr, cuda_failure_reason, open_session

DATA = Path(__file__).parent / "data"
SELFTEST = DATA / "selftest.onnx"
KERAS_TOLERANCE = 1e-5  # the CPU's passes against Keras' (float rounding between frameworks)
DEVICE_TOLERANCE = 1e-6  # CUDA's passes against the CPU's (TF32 off)
MASK_GAP = 1e-3  # a pass with another mask moves some output by more than this
SPEED_IMAGES, SPEED_PASSES = 64, 16
PACKAGES = ("numpy", "h5py", "Pillow", "simplejpeg", "mcd-score")


def diagnose(model: Path | None = None, device: str = "auto", max_memory_mb: int = 2048,
             passes: int = 50) -> dict[str, Any]:
    """See the module docstring."""
    report: dict[str, Any] = {"requested_device": device, "versions": versions(),
                              "providers": providers()}
    usable = [CPU] + ([CUDA] if report["providers"]["cuda"]["loads"] else [])
    report["self_test"] = self_test(usable)
    report["model"] = None if model is None else model_check(model, usable, max_memory_mb, passes)
    report["runs_on"] = _runs_on(device, report)
    report["ok"] = report["runs_on"] is not None
    return report


def versions() -> dict[str, str]:
    """The versions of what scoring depends on."""
    found = {"python": platform.python_version()}
    for name in ("onnxruntime-gpu", "onnxruntime"):
        try:
            found[name] = importlib.metadata.version(name)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def providers() -> dict[str, Any]:
    """The providers ONNX Runtime lists, and the CUDA diagnosis."""
    listed = ort.get_available_providers()
    report: dict[str, Any] = {"listed": listed, "cuda": {"listed": CUDA in listed, "loads": False}}
    cuda = report["cuda"]
    if not cuda["listed"]:
        cuda["error"] = ("this onnxruntime has no CUDA execution provider (the CPU-only "
                         "onnxruntime package?)")
        cuda["remedy"] = 'pip install "mcd-score[cuda]" (onnxruntime-gpu with CUDA 13 and cuDNN 9)'
        return report
    cuda["preload"] = cuda_libraries.preload()
    error = _cuda_error()
    cuda["loads"] = not error
    found = cuda_libraries.driver()
    cuda["driver"] = {"present": found.present, "version": found.version, "error": found.error}
    cuda["gpus"] = [asdict(gpu) for gpu in found.gpus]
    if error:
        cuda["error"] = error
        cuda["missing_library"] = cuda_libraries.missing_library(error)
        cuda["missing_libraries"] = cuda_libraries.missing_libraries()
        cuda["remedy"] = _remedy(cuda)
    return report


def _cuda_error() -> str:
    """``""`` if a CUDA session of the self-test graph opens on CUDA, else why not."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    with captured_stderr() as errors:
        try:
            session = ort.InferenceSession(str(SELFTEST), options, providers=[CUDA, CPU])
        except Exception as error:  # noqa: BLE001 - onnxruntime's own exception types
            return f"{type(error).__name__}: {error}"
    if session.get_providers()[0] == CUDA:
        return ""
    return cuda_failure_reason(errors)


def _remedy(cuda: dict[str, Any]) -> str:
    steps = []
    if cuda.get("missing_libraries"):
        steps.append(cuda_libraries.REMEDY_LIBRARIES)
    if not cuda["driver"]["present"]:
        steps.append(cuda_libraries.REMEDY_DRIVER)
    elif cuda["driver"]["error"]:
        steps.append(f"the NVIDIA driver is there but reports: {cuda['driver']['error']}")
    return "; ".join(steps) or cuda_libraries.remedy(cuda.get("error", ""))


def self_test(usable: list[str]) -> dict[str, Any]:
    """The shipped graph on every usable provider (see the module docstring)."""
    expected = json.loads((DATA / "selftest.json").read_text())
    pixels = np.asarray(expected["pixels"], np.uint8)
    keras = np.asarray(expected["keras_passes"], np.float64).transpose(1, 0, 2)  # [N, T, C]
    results: dict[str, Any] = {}
    reference = None
    for provider in usable:
        entry: dict[str, Any] = {}
        try:
            session = open_session(SELFTEST, "cuda" if provider == CUDA else "cpu")
            got = _passes(session, pixels, expected["seed"], len(expected["passes"]))
            entry["max_abs_diff_vs_keras"] = float(np.abs(got - keras).max())
            entry["ok"] = entry["max_abs_diff_vs_keras"] <= KERAS_TOLERANCE
            if provider == CPU:
                reference = got
            elif reference is not None:
                _against_cpu(entry, got, reference)
            entry["images_passes_per_s"] = round(_speed(session), 1)
        except (DeviceError, ModelError, RuntimeError) as error:
            entry.update(ok=False, error=str(error))
        results[provider] = entry
    return results


def _passes(session: ScoringSession, pixels: np.ndarray, seed: int, count: int) -> np.ndarray:
    images = as_inputs(pixels, session.metadata)
    return session.run(images, seed, 0, count, [OUTPUT_PASSES])[OUTPUT_PASSES].astype(np.float64)


def _against_cpu(entry: dict[str, Any], got: np.ndarray, reference: np.ndarray) -> None:
    diff = float(np.abs(got - reference).max())
    entry["max_abs_diff_vs_cpu"] = diff
    entry["masks_agree"] = diff <= MASK_GAP
    entry["ok"] = entry["ok"] and diff <= DEVICE_TOLERANCE


def _speed(session: ScoringSession) -> float:
    """Images x passes per second on random inputs of the model's shape (a warm call first)."""
    shape = [SPEED_IMAGES, *session.metadata.input_shape[1:]]
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    outputs = session.stat_outputs()
    session.run(images[:2], 0, 0, 2, outputs)
    start = time.perf_counter()
    session.run(images, 0, 0, SPEED_PASSES, outputs)
    return SPEED_IMAGES * SPEED_PASSES / (time.perf_counter() - start)


def model_check(model: Path, usable: list[str], max_memory_mb: int, passes: int) -> dict[str, Any]:
    """The user's graph on every usable provider, where its nodes run, and the scorer's plan."""
    report: dict[str, Any] = {"path": str(model), "providers": {}}
    reference = None
    for provider in usable:
        entry: dict[str, Any] = {}
        try:
            session = open_session(Path(model), "cuda" if provider == CUDA else "cpu",
                                   max_memory_mb=max_memory_mb)
        except (DeviceError, ModelError) as error:
            entry.update(ok=False, error=str(error))
            report["providers"][provider] = entry
            if provider == CPU:
                return report
            continue
        shape = [2, *session.metadata.input_shape[1:]]
        images = np.random.default_rng(0).random(shape, dtype=np.float32)
        got = session.run(images, 0, 0, 3, [OUTPUT_PASSES])[OUTPUT_PASSES].astype(np.float64)
        entry["ok"] = bool(np.isfinite(got).all())
        if provider == CPU:
            reference = got
        elif reference is not None:
            _against_cpu(entry, got, reference)
            entry["all_nodes_on_cuda"], entry["nodes_error"] = _all_on_cuda(Path(model))
        chosen = plan(session.metadata, passes, memory_budget(session, max_memory_mb), None,
                      provider)
        entry["plan"] = {"passes": passes, "batch_size": chosen.batch_size,
                         "pass_chunk": chosen.pass_chunk, "call_images": chosen.call_images,
                         "max_memory_mb": max_memory_mb}
        entry["images_passes_per_s"] = round(_speed(session), 1)
        report["providers"][provider] = entry
    return report


def _all_on_cuda(model: Path) -> tuple[bool, str]:
    """Whether a CUDA session with CPU fallback disabled opens: every node has a CUDA kernel."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    with captured_stderr():
        try:
            ort.InferenceSession(str(model), options, providers=[CUDA, CPU])
        except Exception as error:  # noqa: BLE001 - onnxruntime's own exception types
            return False, str(error).strip()[:500]
    return True, ""


def _runs_on(device: str, report: dict[str, Any]) -> str | None:
    """The provider the requested device runs on, if it works."""
    tests = report["self_test"]
    cuda_works = CUDA in tests and tests[CUDA].get("ok", False)
    cpu_works = tests.get(CPU, {}).get("ok", False)
    if device == "cuda":
        return CUDA if cuda_works else None
    if device == "cpu":
        return CPU if cpu_works else None
    return CUDA if cuda_works else CPU if cpu_works else None


def lines(report: dict[str, Any]) -> list[str]:
    """The report for people, one fact a line."""
    out = ["versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
           "providers listed: " + ", ".join(report["providers"]["listed"])]
    cuda = report["providers"]["cuda"]
    if cuda["loads"]:
        gpus = "; ".join(f"{g['name']} ({g['memory_mb']:,} MB)" for g in cuda.get("gpus", []))
        out.append(f"CUDA: loads{f' on {gpus}' if gpus else ''}")
    else:
        out.append(f"CUDA: does not load: {cuda.get('error', '')}")
        if cuda.get("missing_libraries"):
            out.append("  missing libraries: " + ", ".join(cuda["missing_libraries"]))
        elif cuda.get("listed"):
            out.append("  CUDA and cuDNN libraries: all found")
        driver = cuda.get("driver")
        if driver is not None:
            out.append("  NVIDIA driver: " + (f"CUDA {driver['version']}" if driver["present"]
                                              else f"not found ({driver['error']})")
                       + (f"; {driver['error']}" if driver["present"] and driver["error"] else ""))
        if cuda.get("remedy"):
            out.append(f"  remedy: {cuda['remedy']}")
    for provider, entry in report["self_test"].items():
        out.append(f"self-test on {_short(provider)}: " + _describe(entry))
    if report["model"] is not None:
        for provider, entry in report["model"]["providers"].items():
            line = f"model on {_short(provider)}: " + _describe(entry)
            if "plan" in entry:
                p = entry["plan"]
                line += (f"; plan for T={p['passes']}, --max-memory {p['max_memory_mb']}: batch "
                         f"{p['batch_size']}, {p['pass_chunk']} passes per call")
            if "all_nodes_on_cuda" in entry:
                line += ("; every node on CUDA" if entry["all_nodes_on_cuda"]
                         else f"; some nodes cannot run on CUDA: {entry['nodes_error']}")
            out.append(line)
    verdict = (f"--device {report['requested_device']}: runs on {_short(report['runs_on'])}"
               if report["ok"] else f"--device {report['requested_device']}: does not work here")
    out.append(verdict)
    return out


def _short(provider: str | None) -> str:
    return {CPU: "CPU", CUDA: "CUDA"}.get(provider or "", str(provider))


def _describe(entry: dict[str, Any]) -> str:
    if "error" in entry and not entry.get("ok"):
        return f"failed: {entry['error']}"
    parts = ["ok" if entry.get("ok") else "FAILED"]
    if "max_abs_diff_vs_keras" in entry:
        parts.append(f"matches Keras within {entry['max_abs_diff_vs_keras']:.1e}")
    if "max_abs_diff_vs_cpu" in entry:
        parts.append(f"CPU vs this within {entry['max_abs_diff_vs_cpu']:.1e} (masks "
                     f"{'agree' if entry['masks_agree'] else 'DIFFER'})")
    if "images_passes_per_s" in entry:
        parts.append(f"{entry['images_passes_per_s']:,.0f} image-passes/s")
    return ", ".join(parts)


__all__ = ["diagnose", "lines", "model_check", "providers", "self_test", "versions"]
