"""What the CUDA suite (``tests/cuda``) runs on: CUDA, or the CPU in ``scripts/gpu_check.sh``'s
dry run (``MCD_GPU_CHECK_DEVICE=cpu``)."""

import os

DEVICE = os.environ.get("MCD_GPU_CHECK_DEVICE", "cuda")
PROVIDER = "CPUExecutionProvider" if DEVICE == "cpu" else "CUDAExecutionProvider"
