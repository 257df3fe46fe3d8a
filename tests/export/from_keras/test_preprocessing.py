"""Built-in preprocessing: models that rescale or normalise their own input get pixels unscaled."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from export.api import ExportOptions, build
from export.cli import main
from scorer.contract import ModelMetadata

FAST = ExportOptions(validation_passes=20)


def keras():
    from export.from_keras.backend import keras

    keras.utils.set_random_seed(7)
    return keras


def cnn(*leading, size: int = 8):
    """``leading`` layers, then a small convolutional classifier with a dropout head."""
    k = keras()
    L = k.layers
    return k.Sequential([k.Input((size, size, 3)), *leading, L.Conv2D(4, 3, activation="relu"),
                         L.Flatten(), L.Dropout(0.3), L.Dense(3, activation="softmax")])


def metadata_of(path) -> ModelMetadata:
    model = onnx.load(path)
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})


def test_leading_rescaling_gets_scale_1_and_the_metadata_says_so(tmp_path):
    source, out = tmp_path / "rescaling.keras", tmp_path / "rescaling.onnx"
    cnn(keras().layers.Rescaling(1 / 255, name="to_unit")).save(source)
    result = CliRunner().invoke(main, [str(source), str(out), "--validation-passes", "20"])
    assert result.exit_code == 0, result.output
    assert "the model rescales its input itself" in result.output and "--scale" in result.output
    meta = metadata_of(out)
    assert meta.preprocessing.scale == 1.0 and meta.preprocessing.offset == 0.0
    assert meta.preprocessing.mean is None and meta.preprocessing.std is None
    assert meta.preprocessing_origin == "model"
    assert meta.built_in_preprocessing == ("to_unit (Rescaling scale=0.00392157 offset=0)",)


def test_explicit_scale_wins(tmp_path):
    source, out = tmp_path / "rescaling.keras", tmp_path / "rescaling.onnx"
    cnn(keras().layers.Rescaling(1 / 255)).save(source)
    result = CliRunner().invoke(main, [str(source), str(out), "--scale", "0.5", "-q",
                                       "--validation-passes", "20"])
    assert result.exit_code == 0, result.output
    meta = metadata_of(out)
    assert (meta.preprocessing.scale, meta.preprocessing_origin) == (0.5, "options")
    assert len(meta.built_in_preprocessing) == 1


def test_plain_model_keeps_the_default_scale():
    meta = build(cnn(), FAST).metadata
    assert meta.preprocessing.scale == pytest.approx(1 / 255)
    assert (meta.preprocessing_origin, meta.built_in_preprocessing) == ("default", ())


@pytest.mark.parametrize("leading, found", [
    (lambda L: [L.Normalization(mean=[120.0, 110.0, 100.0], variance=[3000.0] * 3, name="norm")],
     ["norm (Normalization)"]),
    (lambda L: [L.RandomFlip(name="flip"), L.Rescaling(1 / 127.5, offset=-1, name="rescale")],
     ["rescale (Rescaling scale=0.00784314 offset=-1)"]),
    (lambda L: [L.Rescaling(1 / 255, name="a"), L.Normalization(mean=[0.5] * 3, variance=[0.1] * 3,
                                                                name="b")],
     ["a (Rescaling scale=0.00392157 offset=0)", "b (Normalization)"]),
])
def test_leading_preprocessing_layers_are_found(leading, found):
    meta = build(cnn(*leading(keras().layers)), FAST).metadata
    assert list(meta.built_in_preprocessing) == found
    assert (meta.preprocessing.scale, meta.preprocessing_origin) == (1.0, "model")


def test_rescaling_after_a_convolution_is_not_input_preprocessing():
    k = keras()
    L = k.layers
    model = k.Sequential([k.Input((8, 8, 3)), L.Conv2D(4, 3), L.Rescaling(0.5), L.Flatten(),
                          L.Dropout(0.3), L.Dense(3, activation="softmax")])
    meta = build(model, FAST).metadata
    assert meta.preprocessing_origin == "default" and meta.built_in_preprocessing == ()


def test_rescaling_inside_a_nested_backbone_is_found():
    k = keras()
    L = k.layers
    backbone = k.Sequential([k.Input((8, 8, 3)), L.Rescaling(1 / 255, name="inner_scale"),
                             L.Conv2D(4, 3, activation="relu")], name="backbone")
    inputs = k.Input((8, 8, 3))
    x = L.Dropout(0.3)(L.Flatten()(backbone(inputs)))
    model = k.Model(inputs, L.Dense(3, activation="softmax")(x))
    meta = build(model, FAST).metadata
    assert meta.built_in_preprocessing == ("backbone/inner_scale (Rescaling scale=0.00392157 offset=0)",)


def test_validation_feeds_the_built_in_models_raw_pixels():
    """With scale 1 the validation images span 0..255, what mcd-score will feed."""
    from export.assemble import validation_images
    from export.from_keras.preprocessing import choose
    from export.options import Inspection

    model = cnn(keras().layers.Rescaling(1 / 255))
    choice = choose(model, (8, 8, 3), ExportOptions())
    images = validation_images(Inspection((8, 8, 3), None, choice, [], [], [], "keras", ""), seed=0)
    assert images.min() >= 0 and 200 < images.max() < 255
    assert images.dtype == np.float32
