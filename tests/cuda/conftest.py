"""The CUDA suite: runs where ONNX Runtime's CUDA provider loads, skipped elsewhere with the
reason ``mcd-score doctor`` gives.

Models come from ``MCD_GPU_CHECK_DIR/models`` when ``scripts/gpu_check.sh`` prepared them (a GPU
machine may have no TensorFlow), else from the repository's committed graphs (the regression model
and the PyTorch fixtures, exported here without TensorFlow). ``MCD_GPU_CHECK_DEVICE=cpu`` is the
script's dry run: the same tests with the CPU standing in for CUDA, to prove the script and the
tests run, not the GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cuda_support import DEVICE
from paths import DATA

TORCH_EXPORTS = {"mlp": {"head": "softmax"}, "cnn_dynamo": {"head": "softmax"},
                 "mobilenet_v3": {"preprocessing": "torchvision"}}


def cuda_problem() -> str:
    """Why CUDA cannot run here ("" when it can)."""
    if DEVICE == "cpu":
        return ""
    from scorer.doctor import providers

    cuda = providers()["cuda"]
    return "" if cuda["loads"] else f"CUDA does not load: {cuda.get('error', '?')}"


PROBLEM = cuda_problem()


def pytest_collection_modifyitems(items) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cuda)
            if PROBLEM:
                item.add_marker(pytest.mark.skip(reason=PROBLEM))


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """name -> mcd-export graph: the prepared ones, else the committed ones exported here."""
    prepared = os.environ.get("MCD_GPU_CHECK_DIR")
    if prepared and (Path(prepared) / "models").is_dir():
        return {p.stem: p for p in sorted((Path(prepared) / "models").glob("*.onnx"))}
    from export.from_onnx import front
    from export.options import ExportOptions

    folder = tmp_path_factory.mktemp("cuda-models")
    found = {"regression": DATA / "regression" / "model.onnx"}
    for name, options in TORCH_EXPORTS.items():
        result = front.build(front.load(DATA / "torch" / f"{name}.onnx"),
                             ExportOptions(validate=False, **options))
        path = folder / f"{name}.onnx"
        path.write_bytes(result.model.SerializeToString())
        found[name] = path
    return found


@pytest.fixture(scope="session")
def photos() -> Path:
    prepared = os.environ.get("MCD_GPU_CHECK_DIR")
    if prepared and (Path(prepared) / "photos").is_dir():
        return Path(prepared) / "photos"
    return DATA / "regression" / "images"
