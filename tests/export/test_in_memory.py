"""export.export_model and export.predict: a Keras model object in memory, exported once."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import export
import scorer
from export import in_memory
from export.api import ExportOptions, export_file
from export.errors import ExportUsageError
from scorer.contract import METADATA_KEY

OPTIONS = {"validation_passes": 40}


def small_cnn(seed: int = 3):
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential([keras.Input((12, 12, 1)), layers.Conv2D(4, 3, activation="relu"),
                             layers.Flatten(), layers.Dropout(0.4),
                             layers.Dense(5, activation="softmax")])


def metadata(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])


def test_the_in_memory_export_equals_the_file_export(tmp_path):
    model = small_cnn()
    data = export.export_model(model, **OPTIONS)
    model.save(tmp_path / "m.keras")
    export_file(tmp_path / "m.keras", tmp_path / "m.onnx", ExportOptions(**OPTIONS))
    from_file, in_memory_graph = onnx.load(tmp_path / "m.onnx"), onnx.load_from_string(data)
    # the same graph up to the names Keras gives its tensors: the same ops, weights and numbers
    assert [n.op_type for n in from_file.graph.node] == [n.op_type for n in in_memory_graph.graph.node]
    weights = [sorted(onnx.numpy_helper.to_array(i).tobytes() for i in m.graph.initializer)
               for m in (from_file, in_memory_graph)]
    assert weights[0] == weights[1]
    images = np.random.default_rng(2).integers(0, 256, (6, 12, 12), dtype=np.uint8)
    numbers = [scorer.predict(m.SerializeToString(), images, 8, device="cpu")
               for m in (from_file, in_memory_graph)]
    for name in ("mean", "std", "mutual_information"):
        np.testing.assert_array_equal(numbers[0][name], numbers[1][name])
    file_meta, memory_meta = metadata(from_file), metadata(in_memory_graph)
    assert memory_meta.pop("source_name") == f"{model.name} (in memory)"
    assert len(memory_meta.pop("source_sha256")) == 64
    file_meta.pop("source_name"), file_meta.pop("source_sha256")
    assert file_meta == memory_meta


def test_an_unchanged_model_is_not_exported_again(monkeypatch):
    calls = []
    real = in_memory.build
    monkeypatch.setattr(in_memory, "build", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = small_cnn(seed=4)
    first = export.export_model(model, **OPTIONS)
    assert export.export_model(model, **OPTIONS) is first and len(calls) == 1
    assert export.export_model(model, validation_passes=41) is not first and len(calls) == 2
    kernel = model.layers[-1].kernel
    kernel.assign(kernel.numpy() * 1.5)  # trained further: a new export
    assert export.export_model(model, **OPTIONS) != first and len(calls) == 3


def test_predict_on_a_keras_model_is_predict_on_its_graph():
    model = small_cnn(seed=5)
    images = np.random.default_rng(0).integers(0, 256, (9, 12, 12), dtype=np.uint8)
    ours = export.predict(model, images, 10, seed=1, export_options=ExportOptions(**OPTIONS),
                          device="cpu")
    graph = export.export_model(model, **OPTIONS)
    np.testing.assert_array_equal(ours["mean"], scorer.predict(graph, images, 10, seed=1,
                                                               device="cpu")["mean"])
    assert ours.rows == 9 and ours.kind == "probabilities"


def test_dropout_called_with_training_true_is_a_site_and_validates():
    """The recipe that bakes ``Dropout(0.5)(x, training=True)`` into the model: the exported
    graph samples it, and the checks treat it as dropout (identity when off)."""
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(6)
    inputs = keras.Input((20,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = keras.layers.Dropout(0.5)(x, training=True)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    result = in_memory.build(model, ExportOptions(input_size=(4, 5), **OPTIONS))
    assert [site.rate for site in result.metadata.dropout_sites] == [0.5]
    assert any(line.startswith("dropout off") for line in result.report)
    passes = scorer.predict(result.model.SerializeToString(),
                            np.random.default_rng(1).random((4, 4, 5)), 20, device="cpu",
                            preprocessed=True)
    assert (passes["mutual_information"] > 0).all()


def test_what_is_not_a_keras_model_or_an_option_is_refused():
    with pytest.raises(ExportUsageError, match="expected a keras.Model, got str"):
        export.export_model("model.keras")
    with pytest.raises(ExportUsageError, match="the export options are: unsafe, strict"):
        export.export_model(small_cnn(), passes=3)
