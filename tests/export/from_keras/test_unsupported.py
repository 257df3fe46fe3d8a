"""Layers the exporter cannot handle give one clear error naming them, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from export.api import ExportOptions, build
from export.cli import main
from export.errors import ModelLoadError, UnsupportedModelError


def keras():
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(2)
    return keras


def custom_classes():
    """Two custom layers whose TensorFlow ops (Erfinv, Digamma) tf2onnx cannot convert."""
    from export.from_keras.backend import tf

    k = keras()

    class Quantile(k.layers.Layer):
        def call(self, x):
            return k.ops.erfinv(k.ops.tanh(x) * 0.5)

    class Digamma(k.layers.Layer):
        def call(self, x):
            return tf.math.digamma(tf.abs(x) + 1.0)

    return Quantile, Digamma


def unconvertible_model():
    k = keras()
    L = k.layers
    quantile, digamma = custom_classes()
    return k.Sequential([k.Input((16,)), L.Dense(8), quantile(name="quantile"),
                         digamma(name="digamma"), L.Dropout(0.3),
                         L.Dense(3, activation="softmax")])


def test_unconvertible_layers_are_listed_by_name_and_class():
    with pytest.raises(UnsupportedModelError) as info:
        build(unconvertible_model(), ExportOptions(validation_passes=20))
    message = str(info.value)
    assert "2 layers" in message
    assert "quantile (Quantile): Erfinv" in message and "digamma (Digamma): Digamma" in message
    assert "Replace them with standard Keras layers" in message


def test_unconvertible_layers_exit_2_through_the_command(tmp_path):
    k = keras()
    quantile, digamma = custom_classes()
    registered = [k.saving.register_keras_serializable("mcd_tests")(c) for c in (quantile, digamma)]
    source, out = tmp_path / "custom.keras", tmp_path / "custom.onnx"
    try:
        L = k.layers
        k.Sequential([k.Input((16,)), L.Dense(8), registered[0](name="quantile"),
                      registered[1](name="digamma"), L.Dropout(0.3),
                      L.Dense(3, activation="softmax")]).save(source)
        result = CliRunner().invoke(main, [str(source), str(out), "-q"])
    finally:
        for cls in registered:
            k.saving.get_custom_objects().pop(f"mcd_tests>{cls.__name__}", None)
    assert result.exit_code == 2, result.output
    assert "quantile (Quantile): Erfinv" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_layers_of_unknown_classes_are_listed_when_loading(tmp_path):
    k = keras()

    @k.saving.register_keras_serializable("mcd_tests_gone")
    class Doubler(k.layers.Layer):
        def call(self, x):
            return x * 2.0

    source = tmp_path / "gone.keras"
    L = k.layers
    k.Sequential([k.Input((16,)), Doubler(name="double_a"), L.Dense(4), Doubler(name="double_b"),
                  L.Dropout(0.3), L.Dense(3, activation="softmax")]).save(source)
    k.saving.get_custom_objects().pop("mcd_tests_gone>Doubler")  # a new process would not know it
    result = CliRunner().invoke(main, [str(source), str(tmp_path / "gone.onnx"), "-q"])
    assert result.exit_code == 2, result.output
    assert "double_a (Doubler), double_b (Doubler)" in result.output
    assert "Traceback" not in result.output

    from export.from_keras.loading import load_model

    with pytest.raises(ModelLoadError, match="layer classes that Keras does not know"):
        load_model(source)
