"""ONNX Runtime session for an mcd-export graph: device choice, metadata check, running passes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from scorer.contract import (
    INPUT_IMAGES,
    INPUT_PASS_COUNT,
    INPUT_PASS_START,
    INPUT_SEED,
    OUTPUT_ENTROPY_SUM,
    OUTPUT_M2,
    OUTPUT_SUM,
    OUTPUT_VOTES,
    MetadataError,
    ModelMetadata,
)
from scorer.errors import DeviceError, ModelError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cuda", "cpu")
REQUIRED_INPUTS = (INPUT_IMAGES, INPUT_SEED, INPUT_PASS_START, INPUT_PASS_COUNT)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (ONNX Runtime's provider errors).

    ONNX Runtime prints CUDA loading failures straight to stderr whatever the log level; the
    scorer reports them as one line instead.
    """
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines.extend(re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines())


def cuda_failure_reason(lines: list[str]) -> str:
    """The most useful line of ONNX Runtime's CUDA loading errors."""
    for line in lines:
        match = re.search(r"with error: (.*)", line)
        if match:
            return match.group(1).strip()
    for line in lines:
        if "CUDA" in line or "cuda" in line:
            return line.split("]")[-1].strip()
    return "the CUDA execution provider could not be created"


@dataclass
class ScoringSession:
    """An open model: its metadata, the provider that actually runs it, and how to call it."""

    session: ort.InferenceSession
    metadata: ModelMetadata
    provider: str
    model_sha256: str
    notice: str

    @property
    def on_cuda(self) -> bool:
        return self.provider == CUDA

    def stat_outputs(self) -> list[str]:
        names = [OUTPUT_SUM, OUTPUT_M2]
        if self.metadata.output_kind == "probabilities":
            names += [OUTPUT_ENTROPY_SUM, OUTPUT_VOTES]
        return names

    def run(
        self, images: np.ndarray, seed: int, pass_start: int, pass_count: int, outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Run passes ``[pass_start, pass_start + pass_count)`` on ``images``; return ``outputs``."""
        feeds = {
            INPUT_IMAGES: np.ascontiguousarray(images, dtype=np.float32),
            INPUT_SEED: np.array(seed, np.int64),
            INPUT_PASS_START: np.array(pass_start, np.int64),
            INPUT_PASS_COUNT: np.array(pass_count, np.int64),
        }
        if self.on_cuda:
            return self._run_bound(feeds, outputs)
        return dict(zip(outputs, self.session.run(outputs, feeds), strict=True))

    def _run_bound(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """I/O binding: inputs copied to the device once, outputs copied back once."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name in outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return dict(zip(outputs, binding.copy_outputs_to_cpu(), strict=True))


def open_session(model: Path, device: str = "auto", threads: int | None = None) -> ScoringSession:
    """Load ``model``, check it is an mcd-export graph, and place it on ``device``.

    ``auto`` uses CUDA when it works and falls back to the CPU with a notice; ``cuda`` fails with
    :class:`DeviceError` when CUDA cannot be used; ``cpu`` never tries CUDA.
    """
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if not model.is_file():
        raise ModelError(f"model file {str(model)!r} does not exist; export one with mcd-export "
                         "or set MCD_SCORE_MODEL")
    data = model.read_bytes()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    want_cuda = device in ("auto", "cuda") and CUDA in ort.get_available_providers()
    if device == "cuda" and not want_cuda:
        raise DeviceError("--device cuda: this onnxruntime has no CUDA execution provider; "
                          "install mcd-score[cuda] (onnxruntime-gpu with CUDA 13 and cuDNN 9)")
    providers = [CUDA, CPU] if want_cuda else [CPU]
    try:
        with captured_stderr() as errors:
            session = ort.InferenceSession(data, options, providers=providers)
    except Exception as error:  # onnxruntime raises its own unexported exception types
        raise ModelError(f"{model} is not a loadable ONNX model: {error}") from error
    provider = session.get_providers()[0]
    notice = "running on CUDA" if provider == CUDA else "running on CPU"
    if want_cuda and provider != CUDA:
        reason = cuda_failure_reason(errors)
        if device == "cuda":
            raise DeviceError(f"--device cuda: CUDA is not usable here ({reason}); "
                              "use --device cpu or auto, or install mcd-score[cuda]")
        notice = f"running on CPU (CUDA not usable: {reason})"
    props = session.get_modelmeta().custom_metadata_map
    try:
        metadata = ModelMetadata.from_props(props)
    except MetadataError as error:
        raise ModelError(f"{model}: {error}") from error
    names = {i.name for i in session.get_inputs()}
    missing = [n for n in REQUIRED_INPUTS if n not in names]
    if missing:
        raise ModelError(f"{model} lacks the graph inputs {missing} of an mcd-export graph; "
                         "re-export it with mcd-export")
    digest = hashlib.sha256(data).hexdigest()
    return ScoringSession(session, metadata, provider, digest, notice)


__all__ = ["ScoringSession", "captured_stderr", "open_session"]
