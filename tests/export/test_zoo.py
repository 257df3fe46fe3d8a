"""The architectures people train: keras.applications backbones, a ViT-style block and a
multi-label head export, validate against Keras and run in ONNX Runtime.

Each zoo model (``tests/support/zoo_models.py``, 32x32, random weights) is exported once per session with
validation on at the default tolerance (16 x the graph's float32 noise floor, at least 1e-5), and
once more in a child process with TensorFlow's oneDNN off, which rounds the way another CPU does;
``tests/export/test_cuda_kernels.py`` checks their ops.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from zoo_models import ZOO

from export.rewrites.masks import mask_values_np

pytestmark = pytest.mark.slow

ZOO_NAMES = list(ZOO)
# Models whose only site is the head's dropout: the graph's passes can be recomputed from Keras'
# pooled features and the head's weights alone.
HEAD_ONLY = ["convnext_tiny", "mobilenet_v3_small", "resnet50", "densenet121", "multilabel_cnn"]


def pixels(exported, count: int, seed: int) -> np.ndarray:
    """Random images as mcd-score feeds them: pixels 0..255 times the metadata's scale."""
    pre = exported.metadata.preprocessing
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (count, *exported.image_shape)).astype(np.float32)
    return raw * np.float32(pre.scale) + np.float32(pre.offset)


def report_diff(lines: list[str], prefix: str) -> float:
    (line,) = [line for line in lines if line.startswith(prefix)]
    return float(re.search(r"max \|diff\| ([0-9.e+-]+)", line).group(1))


def report_bound(lines: list[str], prefix: str) -> float:
    (line,) = [line for line in lines if line.startswith(prefix)]
    return float(re.search(r"<= ([0-9.e+-]+)", line).group(1))


def assert_tight_default_validation(lines: list[str]) -> None:
    """Validated at the default tolerance, and that tolerance stayed tight: the float32 noise
    floor of these small models is below 1e-6 (a looser bound would hide conversion errors)."""
    assert any(line.startswith("tolerance of the exact checks: ") for line in lines), lines
    for prefix in ("dropout off", "same masks"):
        assert report_bound(lines, prefix) <= 1e-4, lines
        assert report_diff(lines, prefix) <= report_bound(lines, prefix)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_model_exports_and_validates(name, zoo):
    exported = zoo.get(name)
    meta, result = exported.metadata, exported.result
    assert exported.options.tolerance is None  # the default
    assert_tight_default_validation(result.report)
    (mc_line,) = [line for line in result.report if line.startswith("MC mean")]
    assert "passes differ" in mc_line
    assert result.warnings == []  # no unreproducible layer (the ViT block's attention dropout is a site)
    assert meta.output_kind == ZOO[name].output_kind
    assert meta.preprocessing_origin == ZOO[name].preprocessing_origin
    assert meta.preprocessing.scale == (1.0 if meta.preprocessing_origin == "model" else 1 / 255)
    onnx.checker.check_model(exported.onnx_model)
    graph = exported.onnx_model.graph
    assert [i.name for i in graph.input] == ["images", "seed", "pass_start", "pass_count"]
    assert not {i.name for i in graph.initializer} & {"mcd_mul_0", "mcd_add_0"}


def test_every_zoo_model_validates_by_default_with_onednn_off():
    """TensorFlow without oneDNN (its Eigen kernels) sums in another order, as another CPU's
    oneDNN does: every zoo model must still pass the default validation."""
    support = Path(__file__).parents[1] / "support"
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0",
           "PYTHONPATH": os.pathsep.join([str(support), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, str(support / "validate_zoo.py")], env=env,
                           capture_output=True, text=True, timeout=1800)
    assert child.returncode == 0, child.stderr[-3000:]
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    assert [line["name"] for line in lines] == ZOO_NAMES
    for line in lines:
        assert "error" not in line, line
        assert_tight_default_validation(line["report"])


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_passes_differ_in_onnx_runtime(name, zoo):
    exported = zoo.get(name)
    images = pixels(exported, 3, seed=1)
    passes = exported.passes(images, seed=4, start=0, count=6)
    assert passes.shape == (3, 6, exported.metadata.num_outputs)
    assert np.isfinite(passes).all()
    assert passes.std(axis=1).max() > 1e-4, "passes do not differ"
    assert len({passes[0, t].tobytes() for t in range(6)}) == 6


@pytest.mark.parametrize("name", HEAD_ONLY)
def test_head_only_models_equal_keras_features_through_the_masked_head(name, zoo):
    """Independent reference: Keras computes the pooled features, numpy applies the mask and the
    Dense head; the graph (trunk cached, masks generated in-graph) must agree."""
    from export.from_keras.backend import keras

    exported = zoo.get(name)
    model = exported.keras_model
    (site,) = exported.metadata.dropout_sites
    assert site.name == "head_dropout"
    features = keras.Model(model.inputs[0], model.get_layer("head_dropout").input)
    kernel, bias = model.get_layer("head").get_weights()
    images = pixels(exported, 4, seed=2)
    pooled = np.asarray(features(images, training=False), np.float64)
    for t in (0, 5, 1234):
        mask, _ = mask_values_np(site, 0, 11, np.array([t]))
        logits = (pooled * mask[0]) @ kernel + bias
        if exported.metadata.output_kind == "multilabel":
            want = 1.0 / (1.0 + np.exp(-logits))
        else:
            want = np.exp(logits - logits.max(axis=1, keepdims=True))
            want /= want.sum(axis=1, keepdims=True)
        got = exported.passes(images, seed=11, start=t, count=1)[:, 0]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"pass {t}")


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_b0"])
def test_efficientnet_drop_path_sites_are_recognised_and_reported(name, zoo):
    exported = zoo.get(name)
    sites = exported.metadata.dropout_sites
    drop_paths = [s for s in sites if s.drop_path]
    assert len(drop_paths) == len(sites) - 1 >= 9
    for site in drop_paths:
        assert site.layer_class == "Dropout" and site.mask_shape == (1, 1, 1)
        assert site.path.endswith(f"/{site.name}") and site.name.endswith("_drop")
    assert exported.metadata.per_pass_share > 0.5
    notes = "\n".join(exported.result.notes)
    assert "drop path" in notes
    assert "--mc-layers 'head_dropout'" in notes


def test_vit_block_attention_dropout_is_a_site(zoo):
    exported = zoo.get("vit_block")
    paths = [s.path for s in exported.metadata.dropout_sites]
    assert paths[0].startswith("attention/") and set(paths[1:]) == {"mlp_dropout", "head_dropout"}
    (attention,) = [s for s in exported.metadata.dropout_sites if s.path.startswith("attention/")]
    assert attention.mask_shape == (4, 16, 16)  # heads x queries x keys


def test_multilabel_outputs_equal_numpy(zoo):
    exported = zoo.get("multilabel_cnn")
    meta = exported.metadata
    assert (meta.output_kind, meta.head, meta.num_outputs) == ("multilabel", "sigmoid", 6)
    names = [o.name for o in exported.onnx_model.graph.output]
    assert names == ["passes", "pass_sum", "pass_m2", "label_entropy_sum"]
    images = pixels(exported, 5, seed=3)
    passes, total, m2, entropy = exported.run(images, seed=2, start=0, count=30, outputs=names)
    p = passes.astype(np.float64)
    assert ((p > 0) & (p < 1)).all()
    np.testing.assert_allclose(total, p.sum(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m2, ((p - p.mean(axis=1, keepdims=True)) ** 2).sum(axis=1),
                               rtol=1e-4, atol=1e-6)
    bernoulli = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(entropy, bernoulli.sum(axis=1), rtol=1e-5, atol=1e-5)


def test_multilabel_sums_do_not_depend_on_the_batch(zoo):
    exported = zoo.get("multilabel_cnn")
    images = pixels(exported, 6, seed=4)
    names = ["pass_sum", "pass_m2", "label_entropy_sum"]
    together = exported.run(images, seed=1, start=3, count=9, outputs=names)
    for i in (0, 4):
        alone = exported.run(images[i:i + 1], seed=1, start=3, count=9, outputs=names)
        for a, b in zip(together, alone, strict=True):
            assert np.array_equal(a[i], b[0])


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet50", "multilabel_cnn"])
def test_mcd_score_scores_a_zoo_model(name, zoo, tmp_path):
    """mcd-score runs the file on image files, with the scaling the metadata records; for the
    multi-label head, its per-label Bernoulli metrics equal a numpy computation from the passes."""
    import h5py
    from PIL import Image

    from export.api import save
    from scorer.scoring import ScoreOptions, score

    exported = zoo.get(name)
    path = tmp_path / f"{name}.onnx"
    save(exported.onnx_model, path)
    folder = tmp_path / "images"
    folder.mkdir()
    raw = np.random.default_rng(5).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    for i, image in enumerate(raw):
        Image.fromarray(image).save(folder / f"{i}.png")
    summary = score(folder, tmp_path / "out.h5", path, ScoreOptions(passes=40, device="cpu"))
    assert (summary.scored, summary.failed) == (3, 0)
    with h5py.File(tmp_path / "out.h5", "r") as file:
        data = {name: file[name][:] for name in file if file[name].ndim >= 1}
    scale = exported.metadata.preprocessing.scale
    passes = exported.passes(raw.astype(np.float32) * np.float32(scale), seed=0, start=0,
                             count=40).astype(np.float64)
    np.testing.assert_allclose(data["mean"], passes.mean(axis=1), atol=1e-5)
    if exported.metadata.output_kind != "multilabel":
        return
    def bernoulli(p):  # nats, 0 log 0 = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.nan_to_num(p * np.log(p)) - np.nan_to_num((1 - p) * np.log(1 - p))
    total, aleatoric = bernoulli(passes.mean(axis=1)), bernoulli(passes).mean(axis=1)
    np.testing.assert_allclose(data["label_entropy"], total, atol=1e-5)
    np.testing.assert_allclose(data["label_expected_entropy"], aleatoric, atol=1e-5)
    np.testing.assert_allclose(data["label_mutual_information"], total - aleatoric, atol=1e-5)
    np.testing.assert_allclose(data["mutual_information"], (total - aleatoric).sum(axis=1), atol=1e-5)
    assert (data["label_mutual_information"] > 0).any()
