"""``mcd-export`` and :func:`export.api.export_file` on model files: round trips and bad input.

Every bad input gets a typed error (:mod:`export.errors`) with a message saying what to do, the
right exit code through the command (2 usage, 1 failure), and leaves nothing in the destination.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from export.cli import main
from export.errors import ExportError, ExportUsageError, ModelLoadError, UnsupportedModelError
from export.rewrites.masks import mask_values_np
from scorer.contract import ModelMetadata

FAST = ["--validation-passes", "10", "-q"]


def keras():
    from export.from_keras.backend import keras

    return keras


def small_cnn(input_shape=(12, 12, 1), classes: int = 3):
    layers = keras().layers
    keras().utils.set_random_seed(3)
    return keras().Sequential([
        keras().Input(input_shape),
        layers.Conv2D(4, 3, activation="relu"),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(classes, activation="softmax"),
    ])


def lambda_model():
    layers = keras().layers
    inputs = keras().Input((12, 12, 1))
    x = layers.Lambda(lambda t: t * 2.0 - 1.0)(inputs)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    return keras().Model(inputs, layers.Dense(3, activation="softmax")(x))


def two_input_model():
    layers = keras().layers
    image, extra = keras().Input((12, 12, 1), name="image"), keras().Input((4,), name="extra")
    x = layers.Concatenate()([layers.Flatten()(image), extra])
    x = layers.Dropout(0.3)(x)
    return keras().Model([image, extra], layers.Dense(3, activation="softmax")(x))


def two_output_model():
    layers = keras().layers
    inputs = keras().Input((12, 12, 1))
    x = layers.Dropout(0.3)(layers.Flatten()(inputs))
    digits = layers.Dense(10, activation="softmax", name="digits")(x)
    parity = layers.Dense(2, activation="softmax", name="parity")(x)
    return keras().Model(inputs, [digits, parity])


def any_size_model():
    layers = keras().layers
    return keras().Sequential([
        keras().Input((None, None, 3)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dropout(0.3),
        layers.Dense(3, activation="softmax"),
    ])


def no_dropout_model():
    layers = keras().layers
    return keras().Sequential([keras().Input((12, 12, 1)), layers.Flatten(),
                               layers.Dense(3, activation="softmax")])


def lstm_model():
    layers = keras().layers
    return keras().Sequential([
        keras().Input((8, 8)),
        layers.LSTM(6, recurrent_dropout=0.2),
        layers.Dropout(0.3),
        layers.Dense(3, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Model files, good and bad, in one folder."""
    folder = tmp_path_factory.mktemp("models")
    made = {}
    for name, build in (("good", small_cnn), ("lambda", lambda_model), ("two_inputs", two_input_model),
                        ("two_outputs", two_output_model), ("any_size", any_size_model),
                        ("no_dropout", no_dropout_model), ("lstm", lstm_model)):
        made[name] = folder / f"{name}.keras"
        build().save(made[name])
    made["h5"] = folder / "good.h5"
    small_cnn().save(made["h5"])
    made["corrupt"] = folder / "corrupt.keras"
    made["corrupt"].write_bytes(np.random.default_rng(0).bytes(5000))
    made["truncated"] = folder / "truncated.h5"
    made["truncated"].write_bytes(made["h5"].read_bytes()[: made["h5"].stat().st_size // 2])
    made["suffix"] = folder / "good.onnx"
    made["suffix"].write_bytes(made["good"].read_bytes())
    made["missing"] = folder / "missing.keras"
    return made


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def metadata_of(path: Path) -> ModelMetadata:
    model = onnx.load(path)
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})


# ---- round trips ----------------------------------------------------------------------------------


def test_keras_file_round_trip_through_the_command(files, tmp_path):
    out = tmp_path / "model.onnx"
    result = run(files["good"], out, "--class-names", "cat,dog,bird", "--validation-passes", "20")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "validated" in result.output
    meta = metadata_of(out)
    assert meta.class_names == ("cat", "dog", "bird")
    assert meta.source_sha256 == hashlib.sha256(files["good"].read_bytes()).hexdigest()
    assert meta.source_name == "good.keras"
    assert (meta.preprocessing.height, meta.preprocessing.width) == (12, 12)
    assert meta.preprocessing.color_mode == "grayscale"
    assert meta.layout == "NHWC" and meta.input_shape == (None, 12, 12, 1)
    assert meta.output_kind == "probabilities" and meta.num_outputs == 3
    assert [(s.kind, s.rate, s.mask_shape) for s in meta.dropout_sites] == [("dropout", 0.3, (400,))]
    assert {"tensorflow", "keras", "tf2onnx", "onnx"} <= set(meta.versions)
    assert meta.ir_version == onnx.load(out).ir_version <= 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert_matches_keras(out, keras().models.load_model(files["good"]), meta)


def assert_matches_keras(path: Path, model, meta: ModelMetadata, seed: int = 3) -> None:
    """The file's passes equal Keras with the numpy twin's masks on the same layers."""
    from exports import feeds, ort_session

    from export.from_keras.model import find_head
    from export.from_keras.reference import keras_with_masks

    session = ort_session(str(path))
    images = np.random.default_rng(0).random((4, *meta.input_shape[1:]), dtype=np.float32)
    head = find_head(model, None)
    for t in (0, 7):
        got = session.run(["passes"], feeds(images, seed, t, 1))[0][:, 0]
        muls, adds = zip(*(mask_values_np(site, k, seed, np.array([t]))
                           for k, site in enumerate(meta.dropout_sites)), strict=True)
        want = keras_with_masks(model, images, head, meta.dropout_sites, muls, adds)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_quiet_prints_nothing(files, tmp_path):
    result = run(files["good"], tmp_path / "m.onnx", *FAST)
    assert result.exit_code == 0 and result.output == ""


def test_legacy_h5_round_trip_matches_keras(tmp_path, exports):
    from export.api import ExportOptions, export_file

    model = exports.keras_model("mnist_cnn")
    source = tmp_path / "mnist.h5"
    model.save(source)
    export_file(source, tmp_path / "mnist.onnx", ExportOptions(validation_passes=20))
    meta = metadata_of(tmp_path / "mnist.onnx")
    assert meta.source_name == "mnist.h5" and len(meta.dropout_sites) == 2
    assert_matches_keras(tmp_path / "mnist.onnx", model, meta)


# ---- bad input ------------------------------------------------------------------------------------

# case -> (model file, extra options, error type, message fragments, exit code)
BAD_INPUTS = {
    "missing file": ("missing", [], ModelLoadError, ["does not exist"], 2),
    "corrupt .keras": ("corrupt", [], ModelLoadError, ["could not load", ".keras"], 2),
    "truncated .h5": ("truncated", [], ModelLoadError, ["could not load"], 2),
    "wrong suffix": ("suffix", [], ModelLoadError, ["'.onnx'", ".keras", ".h5"], 2),
    "lambda without --unsafe": ("lambda", [], ModelLoadError, ["Lambda", "--unsafe"], 2),
    "several inputs": ("two_inputs", [], UnsupportedModelError, ["2 inputs", "'image'", "'extra'"], 2),
    "several outputs": ("two_outputs", [], UnsupportedModelError, ["2 outputs", "digits", "parity",
                                                                   "--output"], 2),
    "unknown output": ("two_outputs", ["--output", "nope"], UnsupportedModelError,
                       ["no output 'nope'", "digits, parity"], 2),
    "unknown size": ("any_size", [], UnsupportedModelError, ["unknown", "--input-size"], 2),
    "no dropout": ("no_dropout", [], UnsupportedModelError, ["zero uncertainty"], 2),
    "strict with recurrent dropout": ("lstm", ["--strict"], UnsupportedModelError,
                                      ["recurrent_dropout", "--strict"], 2),
    "class-name count": ("good", ["--class-names", "a,b"], ExportUsageError,
                         ["2 class names", "3 classes"], 2),
}


def api_options(extra: list[str]):
    """The :class:`ExportOptions` the command would build from ``extra``."""
    from export.api import ExportOptions

    options = {}
    for flag, value in zip(extra[::2], [*extra[1::2], None], strict=False):
        if flag == "--strict":
            options["strict"] = True
        elif flag == "--output":
            options["output"] = value
        elif flag == "--class-names":
            options["class_names"] = tuple(value.split(","))
    return ExportOptions(validation_passes=10, **options)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_a_typed_error(case, files, tmp_path):
    from export.api import export_file

    key, extra, error_type, fragments, _ = BAD_INPUTS[case]
    with pytest.raises(error_type) as raised:
        export_file(files[key], tmp_path / "out.onnx", api_options(extra))
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_through_the_command(case, files, tmp_path):
    key, extra, _, fragments, exit_code = BAD_INPUTS[case]
    result = run(files[key], tmp_path / "out.onnx", *extra, *FAST)
    assert result.exit_code == exit_code, result.output
    assert fragments[0] in result.output
    assert list(tmp_path.iterdir()) == [], "a failed export left a file behind"


@pytest.mark.parametrize("flags", [["--unsafe"], ["--output", "parity"], ["--input-size", "16x16"],
                                   []])
def test_the_suggested_option_then_works(flags, files, tmp_path):
    key = {"--unsafe": "lambda", "--output": "two_outputs", "--input-size": "any_size"}.get(
        flags[0] if flags else "", "lstm")
    out = tmp_path / "out.onnx"
    result = run(files[key], out, *flags, "--validation-passes", "10")
    assert result.exit_code == 0, result.output
    meta = metadata_of(out)
    if key == "two_outputs":
        assert meta.num_outputs == 2
    if key == "any_size":
        assert (meta.preprocessing.height, meta.preprocessing.width) == (16, 16)
        assert meta.input_shape == (None, 16, 16, 3)
    if key == "lstm":  # recurrent dropout without --strict: exported, with a warning
        assert "warning:" in result.output and "recurrent_dropout" in result.output


def test_recurrent_dropout_warning_from_the_api(files, tmp_path):
    from export.api import export_file

    result = export_file(files["lstm"], tmp_path / "out.onnx", api_options([]))
    assert len(result.warnings) == 1 and "recurrent_dropout=0.2" in result.warnings[0]


@pytest.mark.parametrize("destination", ["missing folder", "a directory"])
def test_unwritable_destination(destination, files, tmp_path):
    from export.api import export_file

    out = tmp_path / "nowhere" / "out.onnx" if destination == "missing folder" else tmp_path
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ExportUsageError, match="does not exist|is a directory"):
        export_file(files["good"], out, api_options([]))
    result = run(files["good"], out, *FAST)
    assert result.exit_code == 2
    assert "does not exist" in result.output or "is a directory" in result.output
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_destination(files, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = run(files["good"], folder / "out.onnx", *FAST)
        assert result.exit_code == 2 and "not writable" in result.output
    finally:
        folder.chmod(0o755)


def test_failed_validation_is_exit_1_and_writes_nothing(files, tmp_path, monkeypatch):
    from export.checks import validate

    monkeypatch.setattr(validate, "_close", _always_fail)
    result = run(files["good"], tmp_path / "out.onnx", *FAST)
    assert result.exit_code == 1, result.output
    assert "does not reproduce" in result.output
    assert list(tmp_path.iterdir()) == []


def _always_fail(what, got, want, report, tolerance=None, source="Keras", why=""):
    from export.errors import ValidationError

    raise ValidationError(f"{what}: the exported graph does not reproduce the Keras model")


def test_tolerance_bounds_absolute_and_relative_difference():
    from export.checks import validate
    from export.errors import ValidationError

    want = np.array([0.5, 100.0], np.float32)
    off_by = np.array([2e-5, 0.0], np.float32)
    with pytest.raises(ValidationError, match="--tolerance"):
        validate._close("check", want + off_by, want, None)
    worst = validate._close("check", want + off_by, want, None, tolerance=1e-4)
    assert worst == pytest.approx(2e-5, rel=1e-2)
    relative = np.array([0.0, 100.0 * 5e-5], np.float32)
    with pytest.raises(ValidationError):
        validate._close("check", want + relative, want, None)
    validate._close("check", want + relative, want, None, tolerance=1e-4)


def test_error_types_map_to_exit_codes():
    assert issubclass(ModelLoadError, ExportUsageError)
    assert issubclass(UnsupportedModelError, ExportUsageError)
    assert issubclass(ExportUsageError, ExportError)


def test_bad_option_values_are_usage_errors(files, tmp_path):
    for args in (["--input-size", "12by12"], ["--input-size", "0x5"], ["--mean", "a,b"],
                 ["--validation-passes", "3"]):
        result = run(files["good"], tmp_path / "out.onnx", *args)
        assert result.exit_code == 2, (args, result.output)
    assert list(tmp_path.iterdir()) == []
