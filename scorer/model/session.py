"""ONNX Runtime session for an mcd-export graph: device choice, metadata check, running passes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from scorer.contract import (
    INPUT_IMAGES,
    INPUT_PASS_COUNT,
    INPUT_PASS_START,
    INPUT_SEED,
    OUTPUT_PASSES,
    STATISTICS,
    MetadataError,
    ModelMetadata,
    feeds,
)
from scorer.errors import DeviceError, ModelError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cuda", "cpu")
REQUIRED_INPUTS = (INPUT_IMAGES, INPUT_SEED, INPUT_PASS_START, INPUT_PASS_COUNT)
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SCHEMA_1_DISABLED_OPTIMIZERS = ["Pad_Fusion"]
"""ONNX Runtime 1.31 folds a zero Pad into the following MaxPool, whose padding counts as -inf:
wrong numbers for graphs exported before mcd-export wrote such padding as a Concat of zeros
(``export.rewrites.pad_pool``, with metadata schema 2). Only those graphs run without
Pad_Fusion: it also folds the pads before convolutions (MobileNetV2: 30% of the model's rate)."""


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
    cuda_fallback: str = ""  # why CUDA was not used under --device auto ("" if it was not tried)

    @property
    def on_cuda(self) -> bool:
        return self.provider == CUDA

    @property
    def notice(self) -> str:
        """Where the session runs, for the start line: ``running on CUDA`` or ``running on CPU``."""
        return "running on CUDA" if self.on_cuda else "running on CPU"

    def stat_outputs(self) -> list[str]:
        return list(STATISTICS[self.metadata.output_kind])

    def run(
        self, images: np.ndarray, seed: int, pass_start: int, pass_count: int, outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Run passes ``[pass_start, pass_start + pass_count)`` on ``images``; return ``outputs``."""
        inputs = feeds(images, seed, pass_start, pass_count)
        if self.on_cuda:
            return self._run_bound(inputs, outputs)
        return dict(zip(outputs, self.session.run(outputs, inputs), strict=True))

    def _run_bound(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """I/O binding: inputs copied to the device once, outputs copied back once."""
        binding = self.session.io_binding()
        for name, value in inputs.items():
            binding.bind_cpu_input(name, value)
        for name in outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return dict(zip(outputs, binding.copy_outputs_to_cpu(), strict=True))


def open_session(model: Path | bytes, device: str = "auto", threads: int | None = None,
                 spinning: bool = False) -> ScoringSession:
    """Load ``model`` (a file, or its bytes), check it is an mcd-export graph, and place it on
    ``device``.

    ONNX Runtime's threads do not spin while they wait for work unless ``spinning``: spinning
    saves a few microseconds per operator when the model runs alone, but the scorer decodes the
    next images at the same time, and a spinning thread takes the core the decoder needs.

    ``auto`` uses CUDA when it works and falls back to the CPU quietly (the reason is kept in
    ``cuda_fallback``); ``cuda`` fails with :class:`DeviceError` when CUDA cannot be used;
    ``cpu`` never tries CUDA.

    Raises:
        ModelError: The file is missing, a Keras model, not ONNX, or not an mcd-export graph
            whose metadata matches the graph.
        DeviceError: ``device`` is unknown, or ``cuda`` and CUDA cannot run here.
    """
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    data = _read_model(model)
    model = model if isinstance(model, Path) else Path("(the model's bytes)")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    want_cuda = device in ("auto", "cuda") and CUDA in ort.get_available_providers()
    if device == "cuda" and not want_cuda:
        raise DeviceError("--device cuda: this onnxruntime has no CUDA execution provider; "
                          "install mcd-score[cuda] (onnxruntime-gpu with CUDA 13 and cuDNN 9)")
    providers = [CUDA, CPU] if want_cuda else [CPU]
    with captured_stderr() as errors:
        session = _new_session(data, options, providers, model)
    provider = session.get_providers()[0]
    fallback = ""
    if want_cuda and provider != CUDA:
        fallback = cuda_failure_reason(errors)
        if device == "cuda":
            raise DeviceError(f"--device cuda: CUDA is not usable here ({fallback}); "
                              "use --device cpu or auto, or install mcd-score[cuda]")
    try:
        metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    except MetadataError as error:
        raise ModelError(f"{model}: {error}") from error
    if metadata.schema_version < 2:
        with captured_stderr():
            session = _new_session(data, options, providers if provider == CUDA else [CPU], model,
                                   SCHEMA_1_DISABLED_OPTIMIZERS)
        provider = session.get_providers()[0]
    check_graph(session, metadata, model)
    return ScoringSession(session, metadata, provider, hashlib.sha256(data).hexdigest(), fallback)


def _new_session(data: bytes, options: ort.SessionOptions, providers: list[str], model: Path,
                 disabled: Sequence[str] = ()) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, options, providers=providers,
                                    disabled_optimizers=list(disabled))
    except Exception as error:  # onnxruntime raises its own unexported exception types
        raise ModelError(f"{model} is not a loadable ONNX model: {error}") from error


def _read_model(model: Path | bytes) -> bytes:
    if isinstance(model, bytes | bytearray | memoryview):
        data = bytes(model)
        if data[:4] in (b"PK\x03\x04", b"\x89HDF"):
            raise ModelError("these bytes are a Keras model, not an mcd-export ONNX graph; export "
                             "the model first (export.export_model, or mcd-export)")
        return data
    if not model.is_file():
        raise ModelError(f"model file {str(model)!r} does not exist; export one with mcd-export "
                         "or set MCD_SCORE_MODEL")
    data = model.read_bytes()
    if model.suffix.lower() in KERAS_SUFFIXES or data[:4] in (b"PK\x03\x04", b"\x89HDF"):
        raise ModelError(f"{model} is a Keras model, not an mcd-export ONNX graph; export it "
                         f"first: mcd-export {model} {model.with_suffix('.onnx')}")
    return data


def check_graph(session: ort.InferenceSession, meta: ModelMetadata, model: Path) -> None:
    """The metadata must describe this graph: inputs, output width and finite preprocessing.

    Raises:
        ModelError: Naming what the metadata says, what the graph has, and to re-export.
    """
    problems = []
    inputs = {i.name: i for i in session.get_inputs()}
    missing = [n for n in REQUIRED_INPUTS if n not in inputs]
    if missing:
        raise ModelError(f"{model} lacks the graph inputs {missing} of an mcd-export graph; "
                         "re-export it with mcd-export")
    outputs = {o.name: o for o in session.get_outputs()}
    wanted = [OUTPUT_PASSES, *STATISTICS[meta.output_kind]]
    absent = [n for n in wanted if n not in outputs]
    if absent:
        problems.append(f"output kind {meta.output_kind!r} needs graph outputs {absent}")
    pre = meta.preprocessing
    graph_shape = inputs[INPUT_IMAGES].shape
    declared = list(meta.input_shape)
    if len(graph_shape) != len(declared) or any(
            isinstance(g, int) and d is not None and g != d for g, d in zip(graph_shape[1:], declared[1:],
                                                                            strict=False)):
        problems.append(f"input shape {declared} in the metadata, {graph_shape} in the graph")
    elif all(isinstance(d, int) for d in declared[1:]) and \
            int(np.prod(declared[1:])) != pre.height * pre.width * pre.channels:
        problems.append(f"preprocessing gives {pre.height}x{pre.width}x{pre.channels} values per "
                        f"image, the input holds {int(np.prod(declared[1:]))}")
    if OUTPUT_PASSES in outputs:
        width = outputs[OUTPUT_PASSES].shape[-1]
        if isinstance(width, int) and width != meta.num_outputs:
            problems.append(f"num_outputs {meta.num_outputs} in the metadata, {width} in the graph")
    numbers = [pre.scale, pre.offset, *(pre.mean or ()), *(pre.std or ())]
    if not all(np.isfinite(numbers)):
        problems.append(f"non-finite preprocessing numbers {numbers}")
    if problems:
        raise ModelError(f"{model}: its metadata does not match the graph ({'; '.join(problems)}); "
                         "re-export the model with mcd-export")


__all__ = ["ScoringSession", "captured_stderr", "check_graph", "open_session"]
