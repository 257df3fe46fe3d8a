"""Validation runs Keras and ONNX Runtime in calls sized by ``--max-memory``."""

from __future__ import annotations

import numpy as np
import pytest

from export.api import ExportOptions, build
from export.checks.memory import MB, Budget, Footprint


def test_budget_arithmetic():
    footprint = Footprint(per_image=10 * MB, per_pass=2 * MB, activations=40 * MB)
    budget = Budget(600)
    assert budget.keras_rows(footprint) == 600 // 60  # 1.5 x all activations of a row
    assert budget.graph_rows(footprint) == 600 // 24  # twice the largest tensors of a row
    assert budget.graph_passes(footprint, 4) == (300 - 40) // 8
    assert Budget(1).keras_rows(footprint) == Budget(1).graph_passes(footprint, 4) == 1


def conv_model(size: int = 48):
    """Dropout right after the first convolution: both convolutions' work runs once per pass."""
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(4)
    L = keras.layers
    return keras.Sequential([
        keras.Input((size, size, 3)),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.Dropout(0.3),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(3, activation="softmax"),
    ])


def test_validation_calls_fit_the_memory_budget(monkeypatch):
    from export.checks import validate
    from export.from_keras import reference

    keras_rows, graph_passes = [], []
    call, run_passes = reference._call, validate.run_passes

    def recording_call(model, images, head):
        keras_rows.append(len(images))
        return call(model, images, head)

    def recording_run_passes(sess, images, seed, start, count, per_call=None):
        graph_passes.append(min(count, per_call or count) * len(images))
        return run_passes(sess, images, seed, start, count, per_call)

    monkeypatch.setattr(reference, "_call", recording_call)
    monkeypatch.setattr(validate, "run_passes", recording_run_passes)
    result = build(conv_model(), ExportOptions(max_memory=64, validation_passes=30))
    footprint = Footprint(result.metadata.bytes_per_image, result.metadata.bytes_per_image_pass)
    assert footprint.per_pass > 48 * 48 * 32 * 4  # the per-pass part holds the conv activations
    rows = max(keras_rows)
    assert 1 <= rows < 4 * 30  # the 120 image-pass rows of the MC check ran in several calls
    assert rows * 1.5 * 2 * 48 * 48 * 32 * 4 <= 64 * MB  # two conv activations a row, at least
    assert max(graph_passes) < 4 * 30
    assert any(line.startswith("MC mean over 30 passes") for line in result.report)


def test_chunked_passes_equal_one_call(exports):
    from export.checks.probe import session
    from export.checks.validate import run_passes

    exported = exports.get("cnn_linear")
    sess = session(exported.onnx_model)
    images = np.random.default_rng(0).random((3, *exported.image_shape), dtype=np.float32)
    whole = run_passes(sess, images, 5, 10, 13)
    for per_call in (1, 4, 13):
        assert np.array_equal(run_passes(sess, images, 5, 10, 13, per_call), whole)


@pytest.mark.parametrize("rows", [1, 3])
def test_keras_references_do_not_depend_on_the_chunk_size(rows, exports):
    from export.from_keras.reference import keras_predict, keras_with_masks

    exported = exports.get("mnist_cnn")
    model, head, sites = exported.keras_model, exported.head(), exported.metadata.dropout_sites
    images = np.random.default_rng(1).random((5, *exported.image_shape), dtype=np.float32)
    np.testing.assert_allclose(keras_predict(model, images, head, rows),
                               keras_predict(model, images, head, 64), atol=1e-6)
    muls = [np.full((1, *s.mask_shape), 2.0, np.float32) for s in sites]
    adds = [None] * len(sites)
    np.testing.assert_allclose(keras_with_masks(model, images, head, sites, muls, adds, rows),
                               keras_with_masks(model, images, head, sites, muls, adds, 64),
                               atol=1e-6)
