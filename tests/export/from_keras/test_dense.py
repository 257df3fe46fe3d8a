"""Dense outputs (segmentation, dense regression): Keras models whose output is
``(batch, height, width, channels)`` export with per-pixel statistics and validate per pixel."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from dense_models import SIZE, segnet, unet

from export.api import build
from export.errors import UnsupportedModelError
from export.options import ExportOptions
from scorer.contract import OUTPUT_ENTROPY_SUM, OUTPUT_M2, OUTPUT_PASSES, OUTPUT_SUM, OUTPUT_VOTES, feeds

pytestmark = pytest.mark.slow
OPTIONS = ExportOptions(validation_passes=100)


@pytest.fixture(scope="module")
def exported_unet():
    model = unet()
    return model, build(model, OPTIONS)


def session(result) -> ort.InferenceSession:
    return ort.InferenceSession(result.model.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def pixels(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.float32)


def test_a_unet_exports_validates_and_runs_its_encoder_once(exported_unet):
    _, result = exported_unet
    meta = result.metadata
    assert (meta.map_shape, meta.output_kind, meta.num_outputs) == ((SIZE, SIZE), "probabilities", 4)
    assert meta.schema_version == 4 and meta.output_shape == (SIZE, SIZE, 4)
    assert [s.name for s in meta.dropout_sites] == ["bottleneck_dropout", "decoder_dropout"]
    assert meta.trunk == "cached" and 0 < meta.per_pass_share < 1  # the encoder runs once
    report = "\n".join(result.report)
    assert "dropout off: ONNX vs Keras predict" in report and "same masks" in report
    assert "MC mean over 100 passes agrees with Keras dropout" in report
    assert any("per pixel (32x32)" in line for line in result.rewrites)


def test_the_in_graph_statistics_are_those_of_the_passes_per_pixel(exported_unet):
    """Recomputed in numpy (float64) from the ``passes`` output of the same call."""
    _, result = exported_unet
    names = [OUTPUT_PASSES, OUTPUT_SUM, OUTPUT_M2, OUTPUT_ENTROPY_SUM, OUTPUT_VOTES]
    passes, total, m2, entropy, votes = session(result).run(names, feeds(pixels(3, 0), 5, 0, 12))
    assert passes.shape == (3, 12, SIZE, SIZE, 4)
    p = passes.astype(np.float64)
    np.testing.assert_allclose(total, p.sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(m2, ((p - p.mean(axis=1, keepdims=True)) ** 2).sum(axis=1),
                               atol=1e-5)
    plogp = np.where(p > 0, p * np.log(np.maximum(p, 1e-30)), 0.0)
    np.testing.assert_allclose(entropy, -plogp.sum(axis=(1, 4)), atol=1e-4)
    counted = np.stack([(p.argmax(axis=-1) == c).sum(axis=1) for c in range(4)], axis=-1)
    assert (votes == counted).mean() > 0.999 and votes.sum(axis=-1).min() == 12


def test_the_mc_mean_per_pixel_agrees_with_keras_own_mc_dropout(exported_unet):
    """Against the usual recipe, ``model(x, training=True)`` in a loop (the U-Net has no
    BatchNormalization, so training mode changes only its dropout): per pixel and class, the
    difference of the two means in standard errors must look like noise (fails on a bias)."""
    model, result = exported_unet
    images, passes = pixels(2, 1), 400
    ours = session(result).run([OUTPUT_PASSES], feeds(images, 3, 0, passes))[0].astype(np.float64)
    theirs = np.stack([np.asarray(model(images, training=True)) for _ in range(passes)], axis=1)
    error = np.sqrt(ours.var(axis=1) / passes + theirs.var(axis=1) / passes)
    moving = error > 1e-6  # pixels whose output dropout moves at all
    z = np.abs(ours.mean(axis=1) - theirs.mean(axis=1))[moving] / error[moving]
    assert moving.mean() > 0.9
    assert np.mean(z ** 2) < 1.5 and np.quantile(z, 0.99) < 4.0, (np.mean(z ** 2), z.max())


def test_a_segnet_style_encoder_decoder_exports_and_validates():
    result = build(segnet(), OPTIONS)
    meta = result.metadata
    assert (meta.map_shape, meta.num_outputs) == ((SIZE, SIZE), 3)
    assert len(meta.dropout_sites) == 4
    assert any(line.startswith("MC mean over 100 passes agrees") for line in result.report)


@pytest.mark.parametrize(("activation", "channels", "kind", "classes"), [
    ("sigmoid", 1, "probabilities", 2),  # binary per pixel: [1 - p, p]
    ("sigmoid", 3, "multilabel", 3),  # independent labels per pixel
    ("linear", 1, "values", 1),  # dense regression (depth)
])
def test_sigmoid_multilabel_and_linear_dense_heads(activation, channels, kind, classes):
    result = build(unet(classes=channels, activation=activation), OPTIONS)
    meta = result.metadata
    assert (meta.output_kind, meta.num_outputs, meta.map_shape) == (kind, classes, (SIZE, SIZE))
    passes = session(result).run([OUTPUT_PASSES], feeds(pixels(2, 2), 0, 0, 3))[0]
    assert passes.shape == (2, 3, SIZE, SIZE, classes)
    if activation == "sigmoid" and channels == 1:
        np.testing.assert_allclose(passes.sum(axis=-1), 1.0, atol=1e-6)


def test_a_dense_output_whose_size_does_not_follow_from_the_input_is_refused():
    from export.from_keras.backend import keras

    layers = keras.layers
    inputs = keras.Input((None, None, 3))
    x = layers.Dropout(0.2)(layers.Conv2D(4, 3, padding="same")(inputs))
    model = keras.Model(inputs, layers.Conv2D(2, 1, activation="softmax")(x))
    with pytest.raises(UnsupportedModelError, match="does not follow from the model's input"):
        build(model, ExportOptions(input_size=(16, 16)))


def test_mcd_score_refuses_a_dense_model_with_a_clear_error(exported_unet, tmp_path):
    from scorer.errors import ModelError
    from scorer.model.session import open_session

    _, result = exported_unet
    path = tmp_path / "unet.onnx"
    path.write_bytes(result.model.SerializeToString())
    with pytest.raises(ModelError, match="a dense model .*cannot write per-pixel maps yet"):
        open_session(path, "cpu", 1)
