"""ONNX Runtime session for an mcd-export graph: device choice, metadata check, running passes.

On CUDA: the pip-installed CUDA libraries are preloaded (:mod:`scorer.model.cuda`), TF32 is off
(``use_tf32=0``: fp32 math as on the CPU) unless asked for, ``gpu_mem_limit`` is the memory budget,
the session runs one image once before it is handed out (cuDNN loads lazily: a broken install
fails there, and ``auto`` falls back to the CPU with the reason), and a batch's images are bound
to the GPU once for all its pass chunks with the outputs written straight into numpy arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
from scorer.model import cuda as cuda_libraries

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cuda", "cpu")
DEVICE_ENV = "MCD_SCORE_DEVICE"
"""Environment variable that says what ``auto`` means: ``cpu`` pins a job (or a test suite) to
the CPU on a GPU machine, ``cuda`` makes it fail rather than fall back."""
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
    provider_options: dict[str, str] = field(default_factory=dict)  # as ONNX Runtime reports them
    bound: bool = False  # run through I/O binding (always on CUDA; on the CPU for tests)

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
        return self.runner(images)(seed, pass_start, pass_count, outputs)

    def runner(self, images: np.ndarray):
        """A function ``(seed, pass_start, pass_count, outputs) -> {name: array}`` for several
        pass chunks of the same ``images``: on CUDA the images go to the GPU once."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if not (self.on_cuda or self.bound):
            def run(seed, start, count, outputs):
                values = self.session.run(outputs, feeds(images, seed, start, count))
                return dict(zip(outputs, values, strict=True))
            return run
        return BoundRunner(self, images, "cuda" if self.on_cuda else "cpu")


class BoundRunner:
    """I/O binding for one batch: the images bound once (a device ``OrtValue`` on CUDA), each
    chunk's outputs written by ONNX Runtime straight into numpy arrays (one copy, no second one)."""

    def __init__(self, scoring: ScoringSession, images: np.ndarray, device: str) -> None:
        self.scoring = scoring
        self.images = images
        self.value = ort.OrtValue.ortvalue_from_numpy(images, device, 0)
        self.binding = scoring.session.io_binding()
        self.binding.bind_ortvalue_input(INPUT_IMAGES, self.value)
        self.shapes = {o.name: o.shape for o in scoring.session.get_outputs()}

    def __call__(self, seed: int, start: int, count: int, outputs: list[str]) -> dict[str, np.ndarray]:
        call = feeds(self.images[:0], seed, start, count)
        for name in (INPUT_SEED, INPUT_PASS_START, INPUT_PASS_COUNT):
            self.binding.bind_cpu_input(name, call[name])
        self.binding.clear_binding_outputs()
        arrays = {}
        for name in outputs:
            shape = [len(self.images) if d == "N" else count if d == "T" else d
                     for d in self.shapes[name]]
            array = np.empty(shape, np.float32)
            self.binding.bind_output(name, "cpu", 0, np.float32, shape, array.ctypes.data)
            arrays[name] = array
        self.scoring.session.run_with_iobinding(self.binding)
        return arrays


def open_session(model: Path | bytes, device: str = "auto", threads: int | None = None,
                 spinning: bool = False, tf32: bool = False,
                 max_memory_mb: int | None = None) -> ScoringSession:
    """Load ``model`` (a file, or its bytes), check it is an mcd-export graph, and place it on
    ``device``.

    ONNX Runtime's threads do not spin while they wait for work unless ``spinning``: spinning
    saves a few microseconds per operator when the model runs alone, but the scorer decodes the
    next images at the same time, and a spinning thread takes the core the decoder needs.

    ``auto`` uses CUDA when it works and falls back to the CPU quietly (the reason is kept in
    ``cuda_fallback``); ``cuda`` fails with :class:`DeviceError` when CUDA cannot be used;
    ``cpu`` never tries CUDA. :data:`DEVICE_ENV` set to ``cpu`` or ``cuda`` decides what ``auto``
    means. On CUDA, ``tf32`` allows TF32 math (faster on Ampere and newer, about 1e-3 relative
    error: results then differ from the CPU's), and ``max_memory_mb`` caps the GPU memory
    ONNX Runtime's arena may take (``gpu_mem_limit``).

    Raises:
        ModelError: The file is missing, a Keras model, not ONNX, or not an mcd-export graph
            whose metadata matches the graph.
        DeviceError: ``device`` is unknown, or ``cuda`` and CUDA cannot run here.
    """
    device = resolve_device(device)
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
    if want_cuda:
        cuda_libraries.preload()
    providers = [(CUDA, cuda_options(tf32, max_memory_mb)), CPU] if want_cuda else [CPU]
    with captured_stderr() as errors:
        session = _new_session(data, options, providers, model)
    provider = session.get_providers()[0]
    fallback = ""
    if want_cuda and provider != CUDA:
        fallback = cuda_failure_reason(errors)
        if device == "cuda":
            raise DeviceError(f"--device cuda: CUDA is not usable here ({fallback}); "
                              f"{cuda_libraries.remedy(fallback)}; or use --device cpu or auto")
    try:
        metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    except MetadataError as error:
        raise ModelError(f"{model}: {error}") from error
    if metadata.dense:
        raise ModelError(
            f"{model}: a dense model (per-pixel outputs of {metadata.map_shape[0]}x"
            f"{metadata.map_shape[1]}): mcd-export writes and validates these graphs, but this "
            "mcd-score scores per-image outputs only and cannot write per-pixel maps yet")
    if metadata.schema_version < 2:
        with captured_stderr():
            session = _new_session(data, options, providers if provider == CUDA else [CPU], model,
                                   SCHEMA_1_DISABLED_OPTIMIZERS)
        provider = session.get_providers()[0]
    check_graph(session, metadata, model)
    scoring = ScoringSession(session, metadata, provider, hashlib.sha256(data).hexdigest(), fallback,
                             session.get_provider_options().get(provider, {}))
    if scoring.on_cuda:
        failure = warm_up(scoring)
        if failure:
            if device == "cuda":
                raise DeviceError(f"--device cuda: the CUDA session failed on its first image "
                                  f"({failure}); {cuda_libraries.remedy(failure)}")
            disabled = SCHEMA_1_DISABLED_OPTIMIZERS if metadata.schema_version < 2 else ()
            session = _new_session(data, options, [CPU], model, disabled)
            scoring = ScoringSession(session, metadata, CPU, scoring.model_sha256,
                                     f"CUDA failed on its first image: {failure}",
                                     session.get_provider_options().get(CPU, {}))
    return scoring


def resolve_device(device: str) -> str:
    """``device``, with ``auto`` read from :data:`DEVICE_ENV` when that is set."""
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    pinned = os.environ.get(DEVICE_ENV, "").strip().lower()
    if device != "auto" or not pinned:
        return device
    if pinned not in DEVICES:
        raise DeviceError(f"{DEVICE_ENV}={pinned!r} is not one of {', '.join(DEVICES)}")
    return pinned


def cuda_options(tf32: bool = False, max_memory_mb: int | None = None) -> dict[str, str]:
    """The CUDA provider's options: TF32 off unless asked (ONNX Runtime's default is on), the
    arena capped at the memory budget."""
    options = {"device_id": "0", "use_tf32": "1" if tf32 else "0"}
    if max_memory_mb:
        options["gpu_mem_limit"] = str(int(max_memory_mb) * 2**20)
    return options


def warm_up(scoring: ScoringSession) -> str:
    """Run one image, one pass: ``""`` if it worked, else the error (cuDNN and cuBLAS load at the
    first kernel that needs them, not when the session is created)."""
    meta = scoring.metadata
    shape = [1, *(d if isinstance(d, int) else 1 for d in meta.input_shape[1:])]
    try:
        with captured_stderr() as errors:
            scoring.run(np.zeros(shape, np.float32), 0, 0, 1, scoring.stat_outputs())
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        detail = cuda_failure_reason(errors) if errors else ""
        return f"{type(error).__name__}: {str(error).strip()}" + (f" ({detail})" if detail else "")
    return ""


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


__all__ = ["DEVICE_ENV", "BoundRunner", "ScoringSession", "captured_stderr", "check_graph",
           "cuda_options", "open_session", "resolve_device", "warm_up"]
