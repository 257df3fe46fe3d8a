#!/usr/bin/env bash
# The first GPU run: doctor, the CUDA tests and the GPU benchmark, one summary table (docs/gpu.md).
#
#   scripts/gpu_check.sh --prepare DIR [--quick] [--wheels]   here, with .venv (TensorFlow): models,
#                                                             photographs, wheels for the GPU machine
#   scripts/gpu_check.sh DIR [--device cuda|cpu]              on the GPU machine, from a checkout;
#                                                             --device cpu: the dry run
#
# On the GPU machine, wheels in DIR/wheels (onnxruntime-gpu, simplejpeg) are installed into
# DIR/site, first on PYTHONPATH; the CUDA 13 and cuDNN 9 libraries may come from nvidia-* pip
# packages already installed (torch's): mcd-score preloads them (onnxruntime.preload_dlls).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ "${1:-}" = "--prepare" ]; then
    shift
    exec .venv/bin/python scripts/gpu_check.py prepare "$@"
fi
DIR="$1"
shift
if compgen -G "$DIR/wheels/*.whl" > /dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$DIR/site" "$DIR"/wheels/*.whl
    export PYTHONPATH="$DIR/site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" scripts/gpu_check.py run "$DIR" "$@"
