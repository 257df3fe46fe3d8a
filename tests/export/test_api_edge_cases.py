"""Export edge cases found in review: dict outputs, shared dropout layers, dropout-free outputs,
channels_first convolutions on the CPU, batch-shared noise shapes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from export.api import ExportOptions, build
from export.checks.probe import session
from export.checks.validate import run_passes
from export.cli import main
from export.errors import UnsupportedModelError

FAST = ExportOptions(validation_passes=100)


def keras():
    import keras

    keras.utils.set_random_seed(3)
    return keras


def dict_output_model():
    """Two equal-width heads returned as a dict whose insertion order differs from key order."""
    k = keras()
    L = k.layers
    inputs = k.Input((4, 4, 1))
    hidden = L.Dense(16, activation="relu")(L.Flatten()(inputs))
    cls = L.Dense(3, activation="softmax", name="cls_head")(L.Dropout(0.3)(hidden))
    reg = L.Dense(3, name="reg_head")(L.Dropout(0.3)(hidden))
    return k.Model(inputs, {"reg": reg, "cls": cls})


@pytest.mark.parametrize("output", ["cls_head", "cls"])
def test_dict_output_exports_the_chosen_head(output):
    model = dict_output_model()
    result = build(model, ExportOptions(output=output, validation_passes=100))
    assert result.metadata.output_kind == "probabilities"
    before_cls = model.get_layer("cls_head").input._keras_history.operation.name
    assert [s.name for s in result.metadata.dropout_sites] == [before_cls]
    images = np.random.default_rng(0).random((3, 4, 4, 1), dtype=np.float32)
    passes = run_passes(session(result.model), images, 0, 0, 4)
    np.testing.assert_allclose(passes.sum(axis=-1), 1.0, atol=1e-6)  # softmax rows, not regression
    sub = keras().Model(model.inputs, model.get_layer("cls_head").output)
    off = np.asarray(sub(images, training=False))
    assert np.abs(passes.mean(axis=1) - off).max() < 0.5  # near the deterministic softmax head
    assert any("not on the path" in w for w in result.warnings)


def test_output_without_dropout_on_its_path_is_refused():
    k = keras()
    L = k.layers
    inputs = k.Input((9,))
    hidden = L.Dense(8, activation="relu")(inputs)
    cls = L.Dense(3, activation="softmax", name="cls")(L.Dropout(0.3)(hidden))
    reg = L.Dense(2, name="reg")(hidden)
    model = k.Model(inputs, [cls, reg])
    with pytest.raises(UnsupportedModelError, match="no dropout layer lies on the path to output 'reg'"):
        build(model, ExportOptions(output="reg", validation_passes=100))


def test_shared_dropout_layer_is_refused():
    k = keras()
    L = k.layers
    inputs = k.Input((8,))
    drop = L.Dropout(0.5)
    a = drop(L.Dense(6)(inputs))
    b = drop(L.Dense(6)(inputs))
    model = k.Model(inputs, L.Dense(3, activation="softmax")(L.Multiply()([a, b])))
    with pytest.raises(UnsupportedModelError, match=r"called more than once.*2 calls"):
        build(model, FAST)


def test_batch_shared_noise_shape_validates():
    k = keras()
    L = k.layers
    model = k.Sequential([k.Input((16,)), L.Dense(16, activation="relu"),
                          L.Dropout(0.3, noise_shape=(1, 16)), L.Dense(3, activation="softmax")])
    result = build(model, ExportOptions(validation_passes=300))
    assert any("agrees with Keras dropout" in line for line in result.report)


def test_channels_first_convolution_is_a_clear_usage_error(tmp_path):
    k = keras()
    L = k.layers
    model = k.Sequential([k.Input((3, 16, 16)), L.Conv2D(4, 3, data_format="channels_first"),
                          L.Dropout(0.3), L.Flatten(), L.Dense(3, activation="softmax")])
    path = tmp_path / "cf.keras"
    model.save(path)
    result = CliRunner().invoke(main, [str(path), str(tmp_path / "cf.onnx")])
    assert result.exit_code == 2, result.output
    assert "channels_last" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cf.onnx").exists()


def test_spatial_dropout_1d_drops_whole_channels():
    k = keras()
    L = k.layers
    model = k.Sequential([k.Input((16, 16)), L.Conv1D(8, 3, activation="relu"),
                          L.SpatialDropout1D(0.4), L.Flatten(), L.Dense(3, activation="softmax")])
    result = build(model, ExportOptions(validation_passes=200))
    (site,) = result.metadata.dropout_sites
    assert site.kind == "spatial_dropout" and site.mask_shape == (1, 8)  # one value per channel
    assert any("same masks" in line for line in result.report)


def test_zero_padding_before_max_pooling_validates():
    """ONNX Runtime would fold the padding into the pooling's -inf padding (ResNetV2's stem)."""
    k = keras()
    L = k.layers
    model = k.Sequential([k.Input((12, 12, 3)), L.Conv2D(6, 3), L.ZeroPadding2D(1),
                          L.MaxPooling2D(3, strides=2), L.Flatten(), L.Dropout(0.3),
                          L.Dense(3, activation="softmax")])
    result = build(model, ExportOptions(validation_passes=50))
    ops = {node.op_type for node in result.model.graph.node}
    assert "MaxPool" in ops and "Pad" not in ops
    assert any(line.startswith("dropout off") for line in result.report)
