"""PyTorch models exported to ONNX the ways PyTorch users do, against PyTorch's own numbers.

The fixtures in ``tests/data/torch`` come from ``scripts/make_torch_fixtures.py`` (run with torch
2.14.1 in its own environment; nothing here imports PyTorch): the classic ``F.dropout(...,
training=True)`` MLP, a BatchNorm CNN exported after ``eval()`` with its dropout module in
``train()`` by the TorchScript and the dynamo exporters, the same CNN exported in ``model.train()``
(BatchNormalization in training mode), torchvision's MobileNetV3 with a sigmoid head, and dropout
written as random ops. Beside each: the pixels, PyTorch's output with dropout off and PyTorch's MC
mean and std over 2,000 passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from paths import DATA, ROOT

import scorer
from export.api import export_file
from export.checks.probe import mask_feeds, ones_masks, session
from export.errors import ModelLoadError, UnsupportedModelError
from export.from_onnx import convert, front
from export.options import ExportOptions
from scorer.contract import INPUT_IMAGES

TORCH = DATA / "torch"
MANIFEST = json.loads((TORCH / "manifest.json").read_text())
OPTIONS = {
    "mlp": dict(head="softmax"),
    "cnn": dict(head="softmax", preprocessing="torchvision"),
    "cnn_dynamo": dict(head="softmax", preprocessing="torchvision"),
    "cnn_train_bn": dict(head="softmax", preprocessing="torchvision"),
    "mobilenet_v3": dict(preprocessing="torchvision"),
}
PASSES = MANIFEST["passes"]
Z_LIMIT = 6.0  # standard errors; each model has at most 20 outputs here


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch")
    return {name: export_file(TORCH / f"{name}.onnx", folder / f"{name}.onnx",
                              ExportOptions(**options))
            for name, options in OPTIONS.items()}


def numbers(name):
    return np.load(TORCH / f"{name}.npz")


def pixels(name):
    values = numbers(name)["pixels"]
    return values[..., 0] if values.shape[-1] == 1 else values


def as_classes(values):
    """PyTorch's output in the graph's class layout (a one-logit sigmoid is two classes)."""
    return np.concatenate([1 - values, values], axis=1) if values.shape[1] == 1 else values


@pytest.mark.parametrize("name", list(OPTIONS))
def test_export_records_the_source(name, exported):
    meta = exported[name].metadata
    assert meta.source_format == "onnx" and meta.producer.startswith("pytorch 2.")
    assert meta.layout == "NCHW" and meta.trunk == "cached"
    assert {"onnx", "onnxruntime"} <= set(meta.versions) and "tensorflow" not in meta.versions
    assert len(exported[name].report) == 4  # the tolerance and the three checks, passed
    assert onnx.load_from_string(exported[name].model.SerializeToString()).graph.node


@pytest.mark.parametrize("name", list(OPTIONS))
def test_dropout_off_equals_pytorch_eval(name):
    """The converted graph with every mask 1 is PyTorch's ``eval()`` output (BatchNorm with its
    running statistics, also for the model exported in training mode)."""
    model = front.load(TORCH / f"{name}.onnx")
    found, prepared, _ = front.inspect(model, ExportOptions(**OPTIONS[name]))
    masked, _ = convert.convert_masked(prepared.model, found.sites)
    feeds = {INPUT_IMAGES: numbers(name)["inputs"], **mask_feeds(found.sites, ones_masks)}
    got = session(masked).run(None, feeds)[0]
    np.testing.assert_allclose(got, numbers(name)["eval"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_mc_mean_equals_pytorch_mc_dropout(name, exported, tmp_path):
    """mcd-score's MC mean over 2,000 passes on the pixels agrees with PyTorch's own MC dropout
    (2,000 passes of the model with dropout on) within the standard errors of both."""
    path = tmp_path / "model.onnx"
    path.write_bytes(exported[name].model.SerializeToString())
    got = scorer.predict(path, pixels(name), passes=PASSES, seed=3, device="cpu")
    want, spread = as_classes(numbers(name)["mc_mean"]), numbers(name)["mc_std"]
    spread = np.concatenate([spread, spread], axis=1) if spread.shape[1] == 1 else spread
    error = np.sqrt(got["std"] ** 2 / PASSES + spread ** 2 / PASSES) + 1e-7
    z = np.abs(got["mean"] - want) / error
    assert z.max() < Z_LIMIT, (name, z.max())
    assert got["std"].max() > 1e-3  # dropout shows in the outputs
    # the spread too, where it is not made by rare passes (probabilities near 0 or 1)
    typical = (want > 0.05) & (want < 0.95)
    np.testing.assert_allclose(got["std"][typical], spread[typical], rtol=0.15, atol=2e-3)


def test_preprocessing_torchvision_is_what_pytorch_was_fed(exported, tmp_path):
    """Pixels through the metadata's preprocessing (1/255, ImageNet mean and std, NCHW) equal the
    inputs the fixture script computed for PyTorch."""
    path = tmp_path / "model.onnx"
    path.write_bytes(exported["cnn"].model.SerializeToString())
    from_pixels = scorer.predict(path, pixels("cnn"), passes=5, device="cpu")
    from_inputs = scorer.predict(path, numbers("cnn")["inputs"], passes=5, device="cpu",
                                 preprocessed=True)
    np.testing.assert_allclose(from_pixels["mean"], from_inputs["mean"], rtol=1e-5, atol=1e-6)


def test_batchnorm_in_training_mode_is_rewritten_with_a_warning(exported):
    warnings = exported["cnn_train_bn"].warnings
    assert len(warnings) == 1 and "2 BatchNormalization nodes" in warnings[0]
    assert "model.eval()" in warnings[0]
    assert not exported["cnn"].warnings


def test_mobilenet_runs_almost_all_of_the_network_once(exported):
    meta = exported["mobilenet_v3"].metadata
    assert meta.per_pass_share < 0.01
    assert (meta.head, meta.output_kind, meta.num_outputs) == ("sigmoid", "multilabel", 3)
    assert [s.path for s in meta.dropout_sites] == ["/body/classifier/classifier.2/Dropout"]


def test_dynamo_export_reads_its_external_data(exported, tmp_path):
    assert exported["cnn_dynamo"].metadata.opset == 20
    shutil.copy(TORCH / "cnn_dynamo.onnx", tmp_path / "alone.onnx")
    with pytest.raises(ModelLoadError, match=r"cnn_dynamo.onnx.data.*copy the .data file"):
        export_file(tmp_path / "alone.onnx", tmp_path / "out.onnx", ExportOptions(head="softmax"))


def test_the_exported_graph_is_self_contained(exported, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(exported["cnn_dynamo"].model.SerializeToString())
    assert not list(tmp_path.glob("*.data"))
    assert scorer.predict(path, pixels("cnn_dynamo"), passes=4, device="cpu")["mean"].shape == (4, 5)


def test_random_ops_are_refused():
    with pytest.raises(UnsupportedModelError, match="RandomUniformLike -> Greater -> Cast -> Mul"):
        export_file(TORCH / "random_mask.onnx", ROOT / "unused.onnx", ExportOptions(head="softmax"))
    assert not (ROOT / "unused.onnx").exists()


@pytest.mark.parametrize("name", ["cnn", "mobilenet_v3"])
def test_photographs_end_to_end(name, exported, tmp_path):
    """mcd-score on PNG files of the photographs: the same bits as predict on the array (the
    NCHW decode path), and the MC mean within the standard errors of PyTorch's."""
    from PIL import Image

    from scorer.results.reader import read_arrays
    from scorer.scoring import ScoreOptions, score

    path = tmp_path / "model.onnx"
    path.write_bytes(exported[name].model.SerializeToString())
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(numbers(name)["pixels"]):
        Image.fromarray(image).save(folder / f"{i}.png")
    score(folder, tmp_path / "out.h5", path, ScoreOptions(passes=PASSES, seed=2, device="cpu"))
    data, _ = read_arrays(tmp_path / "out.h5")
    got = scorer.predict(path, numbers(name)["pixels"], passes=PASSES, seed=2, device="cpu")
    for dataset in ("mean", "std", "mutual_information", "passes"):
        if dataset in got:
            np.testing.assert_array_equal(data[dataset], got[dataset], err_msg=dataset)
    want, spread = numbers(name)["mc_mean"], numbers(name)["mc_std"]
    z = np.abs(data["mean"] - want) / (np.sqrt((data["std"] ** 2 + spread ** 2) / PASSES) + 1e-7)
    assert z.max() < Z_LIMIT, z.max()


def test_cli(tmp_path):
    from export.cli import main

    result = CliRunner().invoke(main, [str(TORCH / "cnn.onnx"), str(tmp_path / "out.onnx"),
                                       "--head", "softmax", "--preprocessing", "torchvision",
                                       "--class-names", "a,b,c,d,e"])
    assert result.exit_code == 0, result.output
    assert "--preprocessing torchvision" in result.output
    assert result.output.count("validated:") == 4  # the tolerance and the three checks
    assert "validated: tolerance of the exact checks: 1e-05" in result.output
    result = CliRunner().invoke(main, [str(TORCH / "cnn.onnx"), str(tmp_path / "x.onnx"),
                                       "--head", "softmax", "--mc-layers", "nope"])
    assert result.exit_code == 2 and "/drop/Dropout (Dropout 0.3)" in result.output
    result = CliRunner().invoke(main, [str(TORCH / "cnn.onnx"), str(tmp_path / "x.onnx"),
                                       "--preprocessing", "torchvision", "--scale", "1"])
    assert result.exit_code == 2 and "either" in result.output


BLOCK_TENSORFLOW = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "torch"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from pathlib import Path
import numpy as np
from export.api import export_file
from export.options import ExportOptions
import scorer
source, out = Path(sys.argv[1]), Path(sys.argv[2])
export_file(source, out, ExportOptions(head="softmax"))
print(scorer.predict(out, np.zeros((2, 8, 8), np.uint8), passes=3, device="cpu")["mean"].shape)
"""


def test_the_onnx_path_needs_no_tensorflow(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW, str(TORCH / "mlp.onnx"),
                          str(tmp_path / "out.onnx")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(2, 10)"
