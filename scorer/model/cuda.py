"""Loading ONNX Runtime's CUDA provider, and saying why it does not load.

``libonnxruntime_providers_cuda.so`` has no RPATH: the CUDA 13 and cuDNN 9 libraries that the
``[cuda]`` extra installs as ``nvidia-*`` wheels (under ``site-packages/nvidia``) are found only
after :func:`onnxruntime.preload_dlls` has loaded them, which :func:`preload` does once, before the
first CUDA session. :func:`missing_libraries` reads the loader's own error, :func:`driver` asks the
NVIDIA driver (``libcuda.so.1``) directly. Nothing here needs a GPU to run.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import re
from dataclasses import dataclass, field

import onnxruntime as ort

LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10",
             "libcufft.so.12", "libcudnn.so.9")
"""The shared libraries onnxruntime-gpu 1.31's CUDA provider opens (CUDA 13, cuDNN 9)."""
DRIVER = "libcuda.so.1"
REMEDY_LIBRARIES = ('pip install "mcd-score[cuda]" (CUDA 13 and cuDNN 9 as pip packages), or put '
                    "the CUDA 13 and cuDNN 9 lib folders on LD_LIBRARY_PATH")
REMEDY_DRIVER = ("install the NVIDIA driver (libcuda.so.1, 580 or newer for CUDA 13); in a "
                 "container, run it with the GPU passed through (--gpus all)")
_preloaded: list[str] = []


def preload() -> list[str]:
    """Load the pip-installed CUDA and cuDNN libraries once (:func:`onnxruntime.preload_dlls`);
    what it said (missing libraries), one line each."""
    if _preloaded:
        return _preloaded[1:]
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.suppress(Exception):
        ort.preload_dlls(cuda=True, cudnn=True, msvc=False)
    _preloaded.append("done")
    _preloaded.extend(re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
                      for line in said.getvalue().splitlines() if line.strip())
    return _preloaded[1:]


def missing_library(error: str) -> str | None:
    """The shared library a loader error names, e.g. ``libcublasLt.so.13``."""
    match = re.search(r"(lib[\w.+-]+\.so[.\d]*): cannot open shared object file", error)
    return match.group(1) if match else None


def missing_libraries() -> list[str]:
    """The CUDA provider's libraries that cannot be loaded here, after :func:`preload`."""
    preload()
    missing = []
    for name in LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


@dataclass
class Gpu:
    name: str
    memory_mb: int


@dataclass
class Driver:
    """What the NVIDIA driver says: absent, or its CUDA version and the GPUs it sees."""

    present: bool
    version: str = ""  # the CUDA version the driver supports, e.g. "13.0"
    gpus: list[Gpu] = field(default_factory=list)
    error: str = ""


def driver() -> Driver:
    """Ask ``libcuda.so.1`` for its version and GPUs (no CUDA runtime, no ONNX Runtime)."""
    try:
        cuda = ctypes.CDLL(DRIVER)
    except OSError as error:
        return Driver(False, error=str(error))
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return Driver(True, error="cuDriverGetVersion failed")
    text = f"{version.value // 1000}.{version.value % 1000 // 10}"
    status = cuda.cuInit(0)
    if status != 0:
        return Driver(True, text, error=f"cuInit failed with CUDA error {status} (no usable GPU)")
    count = ctypes.c_int(0)
    cuda.cuDeviceGetCount(ctypes.byref(count))
    gpus = []
    for index in range(count.value):
        device = ctypes.c_int(0)
        cuda.cuDeviceGet(ctypes.byref(device), index)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, device)
        total = ctypes.c_size_t(0)
        cuda.cuDeviceTotalMem_v2(ctypes.byref(total), device)
        gpus.append(Gpu(name.value.decode(errors="replace"), int(total.value // 2**20)))
    return Driver(True, text, gpus)


def free_memory_mb(device_id: int = 0) -> int | None:
    """Free memory of the GPU through the CUDA runtime (``cudaMemGetInfo``), None if unknown."""
    try:
        runtime = ctypes.CDLL("libcudart.so.13")
    except OSError:
        return None
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    if runtime.cudaSetDevice(device_id) != 0 or \
            runtime.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None
    return int(free.value // 2**20)


def remedy(error: str) -> str:
    """What to do about a CUDA provider loading error."""
    library = missing_library(error)
    if library == DRIVER or (library is None and "driver" in error.lower()):
        return REMEDY_DRIVER
    return REMEDY_LIBRARIES


__all__ = ["DRIVER", "LIBRARIES", "Driver", "Gpu", "driver", "free_memory_mb", "missing_libraries",
           "missing_library", "preload", "remedy"]
