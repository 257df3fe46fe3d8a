"""Choosing the Monte Carlo sites: ``--mc-layers``, drop-path layers, attention dropout, the report.

References are computed independently of the exporter: Keras sub-models give the tensors before a
site, numpy applies the mask (from the numpy twin of the in-graph generator) and the rest.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from export.api import ExportOptions, build
from export.cli import main
from export.errors import ExportUsageError
from export.rewrites.masks import mask_values_np

FAST = ExportOptions(validation_passes=100)


def keras():
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(5)
    return keras


def three_dropout_mlp():
    k = keras()
    L = k.layers
    return k.Sequential([
        k.Input((16,)),
        L.Dense(16, activation="relu"), L.Dropout(0.2, name="drop_a"),
        L.Dense(16, activation="relu"), L.Dropout(0.3, name="drop_b"),
        L.Dense(16, activation="relu"), L.Dropout(0.4, name="top_drop"),
        L.Dense(3, activation="softmax"),
    ], name="mlp")


def residual_drop_path(layer: str):
    """``softmax(Dense(GAP(x + drop(branch(x)))))``: one drop-path site on a residual branch."""
    k = keras()
    L = k.layers
    inputs = k.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    branch = L.Conv2D(6, 3, padding="same", name="branch")(x)
    if layer == "StochasticDepth":
        from keras.src.applications.convnext import StochasticDepth

        dropped = StochasticDepth(0.25, name="drop_path")(branch)
    else:
        dropped = L.Dropout(0.25, noise_shape=(None, 1, 1, 1), name="drop_path")(branch)
    x = L.Add()([x, dropped])
    x = L.GlobalAveragePooling2D()(x)
    return k.Model(inputs, L.Dense(3, activation="softmax", name="head")(x))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sequential_reference(model, images, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Run a Sequential model layer by layer; layers named in ``masks`` multiply by their mask,
    other dropout layers pass their input through (inference)."""
    k = keras()
    x = images
    for layer in model.layers:
        if layer.name in masks:
            x = np.asarray(x) * masks[layer.name]
        elif isinstance(layer, k.layers.Dropout):
            continue
        else:
            x = np.asarray(layer(x, training=False))
    return x


# ---- --mc-layers ----------------------------------------------------------------------------------


def test_mc_layers_samples_only_the_chosen_layer():
    model = three_dropout_mlp()
    result = build(model, ExportOptions(mc_layers=("drop_b",), validation_passes=100))
    meta = result.metadata
    assert [s.name for s in meta.dropout_sites] == ["drop_b"] and meta.mc_layers == ("drop_b",)
    assert any(line.strip().startswith("off") and "drop_a" in line for line in result.notes)
    from exports import ort_session

    session = ort_session(result.model)
    images = np.random.default_rng(0).random((5, 16), dtype=np.float32)
    (site,) = meta.dropout_sites
    for t in (0, 3, 77):
        mask, _ = mask_values_np(site, 0, 9, np.array([t]))
        want = sequential_reference(model, images, {"drop_b": mask})
        got = session.run(["passes"], {"images": images, "seed": np.array(9), "pass_start": np.array(t),
                                       "pass_count": np.array(1)})[0][:, 0]
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_mc_layers_globs_keep_site_order():
    result = build(three_dropout_mlp(), ExportOptions(mc_layers=("*_drop", "drop_a"),
                                                      validation_passes=100))
    assert [s.name for s in result.metadata.dropout_sites] == ["drop_a", "top_drop"]
    assert "2 of 3 dropout layers sampled" in result.notes[1]


@pytest.mark.parametrize("patterns, unmatched", [(("nope",), "'nope'"),
                                                 (("drop_b", "dorp_*"), "'dorp_*'")])
def test_mc_layers_matching_nothing_is_a_clear_error(patterns, unmatched):
    with pytest.raises(ExportUsageError) as info:
        build(three_dropout_mlp(), ExportOptions(mc_layers=patterns))
    message = str(info.value)
    assert f"--mc-layers pattern {unmatched} matches no dropout layer" in message
    assert "drop_a (Dropout 0.2); drop_b (Dropout 0.3); top_drop (Dropout 0.4)" in message


def test_mc_layers_matching_nothing_exits_2_through_the_command(tmp_path):
    source = tmp_path / "mlp.keras"
    three_dropout_mlp().save(source)
    result = CliRunner().invoke(main, [str(source), str(tmp_path / "mlp.onnx"), "--mc-layers",
                                       "top_drop,nope", "-q"])
    assert result.exit_code == 2, result.output
    assert "'nope' matches no dropout layer" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "mlp.onnx").exists()


def test_mc_layers_through_the_command_records_the_patterns(tmp_path):
    from exports import ort_session

    from scorer.contract import ModelMetadata

    source, out = tmp_path / "mlp.keras", tmp_path / "mlp.onnx"
    three_dropout_mlp().save(source)
    result = CliRunner().invoke(main, [str(source), str(out), "--mc-layers", "top_*",
                                       "--validation-passes", "20"])
    assert result.exit_code == 0, result.output
    assert "1 of 3 dropout layers sampled" in result.output
    session = ort_session(str(out))
    meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    assert meta.mc_layers == ("top_*",) and [s.name for s in meta.dropout_sites] == ["top_drop"]


# ---- drop path ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["Dropout", "StochasticDepth"])
def test_drop_path_keeps_or_drops_the_whole_branch_per_pass(layer):
    from exports import ort_session

    from export.from_keras.backend import keras as k

    model = residual_drop_path(layer)
    result = build(model, ExportOptions(validation_passes=300))
    (site,) = result.metadata.dropout_sites
    assert (site.kind, site.layer_class, site.drop_path) == ("dropout", layer, True)
    assert site.mask_shape == (1, 1, 1) and site.rate == pytest.approx(0.25)
    assert any(line.startswith("MC mean") for line in result.report)  # vs Keras' own training mode
    features = k.Model(model.inputs[0], [model.get_layer("stem").output,
                                         model.get_layer("branch").output])
    kernel, bias = model.get_layer("head").get_weights()
    images = np.random.default_rng(1).random((4, 8, 8, 3), dtype=np.float32)
    x, branch = (np.asarray(t, np.float64) for t in features(images))
    session = ort_session(result.model)
    passes = 200
    got = session.run(["passes"], {"images": images, "seed": np.array(3), "pass_start": np.array(0),
                                   "pass_count": np.array(passes)})[0]
    masks, _ = mask_values_np(site, 0, 3, np.arange(passes))
    assert set(np.unique(masks)) == {0.0, np.float32(1 / 0.75)}
    for t in range(0, passes, 37):
        want = softmax((x + branch * masks[t]).mean(axis=(1, 2)) @ kernel + bias)
        np.testing.assert_allclose(got[:, t], want, atol=1e-5, rtol=0)
    dropped = masks.reshape(passes) == 0
    assert 0.15 < dropped.mean() < 0.35
    without_branch = softmax(x.mean(axis=(1, 2)) @ kernel + bias)
    np.testing.assert_allclose(got[:, dropped], np.repeat(without_branch[:, None], dropped.sum(), 1),
                               atol=1e-5)


def test_unselected_drop_path_is_identity_and_caching_returns():
    """An early drop path makes the later convolution run once per pass; leaving it out of
    --mc-layers lets the trunk cache it again."""
    k = keras()
    L = k.layers
    inputs = k.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = L.Add()([x, L.Dropout(0.2, noise_shape=(None, 1, 1, 1))(L.Conv2D(6, 3, padding="same")(x))])
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="after")(x)
    x = L.Dropout(0.5, name="head_dropout")(L.GlobalAveragePooling2D()(x))
    model = k.Model(inputs, L.Dense(3, activation="softmax")(x))
    full = build(model, FAST)
    head_only = build(model, ExportOptions(mc_layers=("head_dropout",), validation_passes=100))
    assert full.metadata.per_pass_share > 0.5
    assert head_only.metadata.per_pass_share < 0.01
    assert any("--mc-layers 'head_dropout'" in line for line in full.notes)
    assert not any(line.startswith("hint:") for line in head_only.notes)
    assert [s.name for s in head_only.metadata.dropout_sites] == ["head_dropout"]


# ---- attention dropout ----------------------------------------------------------------------------


def attention_model():
    k = keras()
    L = k.layers
    inputs = k.Input((6, 8))
    y = L.MultiHeadAttention(2, 4, dropout=0.2, name="attention")(inputs, inputs)
    x = L.GlobalAveragePooling1D()(L.Add()([inputs, y]))
    x = L.Dropout(0.3, name="head_dropout")(x)
    return k.Model(inputs, L.Dense(3, activation="softmax")(x))


def test_attention_dropout_is_reproduced_so_strict_accepts_it():
    result = build(attention_model(), ExportOptions(strict=True, input_size=None,
                                                    validation_passes=200))
    assert result.warnings == []
    attention = [s for s in result.metadata.dropout_sites if s.path.startswith("attention/")]
    assert len(attention) == 1 and attention[0].mask_shape == (2, 6, 6)
    assert attention[0].rate == pytest.approx(0.2)
    assert any(line.startswith("same masks") for line in result.report)


def test_gaussian_noise_is_still_reported_and_strict_refuses_it():
    from export.errors import UnsupportedModelError

    k = keras()
    L = k.layers
    model = k.Sequential([k.Input((9,)), L.GaussianNoise(0.1, name="noise"), L.Dense(8),
                          L.Dropout(0.3), L.Dense(3, activation="softmax")])
    assert any("noise (GaussianNoise" in w for w in build(model, FAST).warnings)
    with pytest.raises(UnsupportedModelError, match="noise"):
        build(model, ExportOptions(strict=True))


def test_drop_path_layer_on_a_list_of_tensors_is_a_clear_error():
    """A StochasticDepth that takes [shortcut, residual] (keras_cv's) cannot be masked as one tensor."""
    from export.errors import UnsupportedModelError

    k = keras()
    L = k.layers

    class StochasticDepth(L.Layer):
        def __init__(self, rate, **kwargs):
            super().__init__(**kwargs)
            self.rate = rate

        def call(self, inputs, training=None):
            shortcut, residual = inputs
            return shortcut + residual

    inputs = k.Input((16,))
    x = L.Dense(8)(inputs)
    x = StochasticDepth(0.2, name="two_input_drop_path")([x, L.Dense(8)(x)])
    model = k.Model(inputs, L.Dense(3, activation="softmax")(L.Dropout(0.3)(x)))
    with pytest.raises(UnsupportedModelError, match="'two_input_drop_path' .* list of 2 tensors"):
        build(model, FAST)
    result = build(model, ExportOptions(mc_layers=("dropout*",), validation_passes=50))
    assert [s.layer_class for s in result.metadata.dropout_sites] == ["Dropout"]


def test_report_and_metadata_follow_the_trunk_mode():
    model = three_dropout_mlp()
    cached = build(model, ExportOptions(validate=False))
    naive = build(model, ExportOptions(trunk="input", validate=False))
    assert 0 < cached.metadata.per_pass_share < 1 and naive.metadata.per_pass_share == 1.0
    assert "runs once per pass" in cached.notes[1] and cached.notes[1].endswith("(trunk cached)")
    assert naive.notes[1].startswith("3 of 3 dropout layers sampled; 100.0% of the network runs once")
