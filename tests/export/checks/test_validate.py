"""The exact checks' default tolerance (16 x the graph's float32 noise floor, at least 1e-5) still
fails real conversion errors on small models: one mask element wrong, a dropout site the graph
does not apply, BatchNormalization run in training mode, the preprocessing scale off by 1%, one
weight moved by 1e-3 of its magnitude.

Each error is made by changing one side after the conversion: the Keras model the reference runs
(the graph then computes what the source did before), the numpy masks the reference is given, or
the converted graph itself. The checks compare the two sides, so either way the graph no longer
reproduces its source.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.assemble import build as assemble
from export.checks import validate
from export.checks.noise import FACTOR, noise_floor, one_ulp, perturbed
from export.errors import ValidationError
from export.from_keras import front
from export.from_keras.backend import keras
from export.from_keras.reference import KerasReference
from export.options import ExportOptions

pytestmark = pytest.mark.slow
OPTIONS = ExportOptions(validation_passes=40)


def small_model():
    """Rescaling -> Conv -> BatchNormalization -> SpatialDropout -> pooling -> Dense -> Dropout
    -> Dense(4, softmax), with BatchNormalization statistics far from a batch's."""
    keras.utils.set_random_seed(3)
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = layers.BatchNormalization(name="norm")(x)
    x = layers.SpatialDropout2D(0.2, name="spatial")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16, activation="relu", name="hidden")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    model = keras.Model(inputs, layers.Dense(4, activation="softmax", name="head")(x))
    norm = model.get_layer("norm")
    gamma, beta, mean, variance = norm.get_weights()
    norm.set_weights([gamma * 3, beta + 0.5, mean + 0.2, variance * 0.05])
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 0.3, bias])  # probabilities 0.1-0.5, not saturated
    return model


def most_active_unit(model) -> int:
    """The hidden unit (the dropout's input) with the largest mean on random pixels."""
    images = np.random.default_rng(0).random((16, 8, 8, 3)).astype(np.float32) * 255
    hidden = keras.Model(model.inputs[0], model.get_layer("hidden").output)(images)
    return int(np.argmax(np.asarray(hidden).mean(axis=0)))


def export(model, change_source=None, change_graph=None):
    """Convert ``model``, then apply the error, then assemble and validate; the result."""
    found = front.inspect(model, OPTIONS)
    graph = front.convert_sites(model, found, OPTIONS)
    if change_source is not None:
        change_source(model)
    if change_graph is not None:
        change_graph(graph.masked)
    return assemble(found, graph, KerasReference(model, found.head), OPTIONS, {}, "", "")


def test_the_unchanged_model_validates_and_the_report_says_which_tolerance():
    result = export(small_model())
    (line,) = [line for line in result.report if line.startswith("tolerance of the exact checks")]
    assert "1e-05 (the minimum; float32 noise floor" in line, line


def test_a_wrong_weight_fails():
    """The head weight that matters most (its input unit is the most active): 1e-3 of it moves a
    probability by about 1e-4, ten times the bound; a weight whose unit is off would move nothing
    and no check could see it."""
    model = small_model()
    unit = most_active_unit(model)

    def move_one_weight(model):
        kernel, bias = model.get_layer("head").get_weights()
        kernel[unit, np.argmax(np.abs(kernel[unit]))] *= 1 + 1e-3
        model.get_layer("head").set_weights([kernel, bias])

    with pytest.raises(ValidationError, match="dropout off: ONNX vs Keras predict"):
        export(model, change_source=move_one_weight)


def test_a_preprocessing_scale_off_by_one_percent_fails():
    def rescale(model):
        model.get_layer("rescale").scale *= 1.01

    with pytest.raises(ValidationError, match="dropout off"):
        export(small_model(), change_source=rescale)


def test_batchnormalization_in_training_mode_fails():
    def training_mode(model):
        norm = model.get_layer("norm")
        original = type(norm).call
        norm.call = lambda inputs, training=None, **kwargs: original(norm, inputs, training=True)

    with pytest.raises(ValidationError, match="dropout off"):
        export(small_model(), change_source=training_mode)


def test_one_wrong_mask_element_fails(monkeypatch):
    """The element of the most active unit, on pass 1; a dead unit's element changes nothing."""
    original = validate.mask_values_np
    model = small_model()
    unit = most_active_unit(model)

    def one_flipped(site, k, seed, passes):
        mul, add = original(site, k, seed, passes)
        if site.name == "drop" and passes.tolist() == [1]:
            mul = mul.copy()
            flat = mul.reshape(-1)
            flat[unit] = 2.0 if flat[unit] == 0 else 0.0  # kept <-> dropped (1/(1-p) = 2)
        return mul, add

    monkeypatch.setattr(validate, "mask_values_np", one_flipped)
    with pytest.raises(ValidationError, match="pass 1: ONNX vs Keras with the same masks"):
        export(model)


def test_a_site_the_graph_does_not_apply_fails():
    def bypass_the_dropout(graph: onnx.GraphProto):
        (mul,) = [n for n in graph.graph.node if "mcd_mul_1" in n.input]
        kept = [i for i in mul.input if i != "mcd_mul_1"][0]
        for node in graph.graph.node:
            node.input[:] = [kept if i == mul.output[0] else i for i in node.input]

    with pytest.raises(ValidationError, match="pass 0: ONNX vs Keras with the same masks"):
        export(small_model(), change_graph=bypass_the_dropout)


def test_a_tolerance_given_is_used_as_it_is_and_no_floor_is_measured():
    model = small_model()
    found = front.inspect(model, OPTIONS)
    graph = front.convert_sites(model, found, OPTIONS)
    options = ExportOptions(validation_passes=40, tolerance=3e-4)
    result = assemble(found, graph, KerasReference(model, found.head), options, {}, "", "")
    assert not any("noise floor" in line for line in result.report)
    assert any(line.endswith("<= 0.0003") for line in result.report), result.report


def test_one_ulp_moves_every_nonzero_value_by_one_spacing():
    values = np.array([0.0, 1.0, -3.5, 1e-30, 7e5, -0.0], np.float32)
    moved = one_ulp(values, np.random.default_rng(0))
    steps = np.abs(moved.astype(np.float64) - values)
    assert moved[0] == 0 and moved[-1] == 0
    up = np.abs(np.nextafter(values, np.float32(np.inf)).astype(np.float64) - values)
    down = np.abs(np.nextafter(values, np.float32(-np.inf)).astype(np.float64) - values)
    for i in range(1, 5):
        assert steps[i] in (up[i], down[i]) and steps[i] > 0


def test_the_floor_is_zero_for_a_graph_that_rounding_cannot_move_and_grows_with_its_gain():
    """A graph y = x * w: one ulp on x and on w moves y by about 2 ulps of y, whatever w is."""
    def scaled(w: float) -> onnx.ModelProto:
        helper = onnx.helper
        node = helper.make_node("Mul", ["images", "w"], ["y"])
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [None, 4])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])],
            [onnx.numpy_helper.from_array(np.full(4, w, np.float32), "w")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)

    images = np.ones((3, 4), np.float32)
    assert noise_floor(scaled(0.0), images, [{}], rows=2) == 0.0
    small, large = (noise_floor(scaled(w), images, [{}], rows=2) for w in (1.0, 1024.0))
    assert small <= 2.5 * np.spacing(np.float32(1.0)) and small > 0
    assert large == pytest.approx(1024 * small, rel=0.5)
    copy = perturbed(scaled(1.0), np.random.default_rng(0))
    assert onnx.numpy_helper.to_array(copy.graph.initializer[0]).tolist() != [1.0] * 4


def test_the_default_bound_is_the_floor_times_the_factor_at_least_1e_5():
    check = validate.Validation(None, None, (), np.zeros((1,)), 0, None, None)
    check.floor = 1e-6
    assert check.bound == pytest.approx(1.6e-5) and FACTOR == 16
    assert "16 x the float32 noise floor 1e-06" in check.why()
    check.floor = 1e-8
    assert check.bound == 1e-5 and "the minimum" in check.why()
    check.tolerance = 2e-4
    assert check.bound == 2e-4 and check.why() == "0.0002 (--tolerance)"
