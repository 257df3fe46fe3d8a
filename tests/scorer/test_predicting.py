"""scorer.predict on arrays in memory: the numbers of mcd-score on PNG files of the same pixels,
bit for bit, whatever the batch size; every kind of head; iterables; bad input; saving."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scorer_support import DIGIT_CLASSES, digit_images, exported_model

import scorer
from scorer.images.arrays import ArrayInputError
from scorer.results.compare import compare_results
from scorer.results.reader import read_arrays, read_results
from scorer.scoring import ScoreOptions, score

PASSES = 12


def write_pngs(folder: Path, images: np.ndarray) -> Path:
    """Each image as a PNG named by its index (``0``, ``1``, ...: the names predict gives)."""
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}", format="PNG")
    return folder


def pixels_for(model: Path, count: int, seed: int = 0) -> np.ndarray:
    """Random pixels at the model's input size: ``[N, H, W]`` (grayscale) or ``[N, H, W, 3]``."""
    meta = scorer.open_model(model, "cpu").metadata
    pre = meta.preprocessing
    shape = (count, pre.height, pre.width) + (() if pre.channels == 1 else (3,))
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory, exports) -> dict[str, Path]:
    """A softmax, a one-unit sigmoid, a multi-label and a regression head."""
    folder = tmp_path_factory.mktemp("predict-models")
    sigmoid = folder / "sigmoid.onnx"
    sigmoid.write_bytes(exports.get("binary_sigmoid_cnn").onnx_model.SerializeToString())
    return {"softmax": exported_model(tmp_path_factory, "digits"), "sigmoid": sigmoid,
            "multilabel": exported_model(tmp_path_factory, "multilabel"),
            "values": exported_model(tmp_path_factory, "regression")}


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "multilabel", "values"])
def test_arrays_give_the_numbers_of_their_files_bit_for_bit(models, tmp_path, head):
    images = pixels_for(models[head], 23)
    out = tmp_path / "files.h5"
    score(write_pngs(tmp_path / "png", images), out, models[head],
          ScoreOptions(passes=PASSES, seed=5, device="cpu", save_passes=True))
    files, _ = read_arrays(out)
    order = np.argsort(files["path"].astype(int))  # the folder lists 0, 1, 10, 11, ...
    for batch_size in (1, 7, 64):
        predictions = scorer.predict(models[head], images, PASSES, seed=5, device="cpu",
                                     batch_size=batch_size, save_passes=True)
        assert set(predictions) == set(files)
        for name, values in files.items():
            if name == "key":
                continue
            got, want = predictions[name], values[order]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            if got.dtype.kind == "f":
                np.testing.assert_array_equal(got, want, err_msg=f"{name}, batch {batch_size}")
            else:
                assert got.tolist() == want.tolist(), name


def test_preprocessed_inputs_and_flat_models(models, exports):
    """``x / 255`` as model inputs gives the numbers of the pixels; a flat-vector model takes its
    own input shape ``[N, 784]`` as well as ``[N, 28, 28]`` images."""
    images = pixels_for(models["softmax"], 9)
    pixels = scorer.predict(models["softmax"], images, PASSES, device="cpu")
    inputs = scorer.predict(models["softmax"], images.astype(np.float32) * np.float32(1 / 255),
                            PASSES, device="cpu", preprocessed=True)
    np.testing.assert_array_equal(pixels["mean"], inputs["mean"])
    flat = exports.get("mlp_input_dropout").onnx_model.SerializeToString()
    digits = np.random.default_rng(1).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    as_images = scorer.predict(flat, digits, PASSES, device="cpu")
    as_vectors = scorer.predict(flat, digits.reshape(6, 784) / 255.0, PASSES, device="cpu",
                                preprocessed=True)
    np.testing.assert_allclose(as_images["mean"], as_vectors["mean"], atol=1e-6)


def test_an_iterable_of_batches_equals_the_whole_array(models):
    images = pixels_for(models["softmax"], 50)
    labels = np.arange(50) % 10
    whole = scorer.predict(models["softmax"], images, PASSES, device="cpu", labels=labels)
    batches = ((images[i:i + 16], labels[i:i + 16]) for i in range(0, 50, 16))
    streamed = scorer.predict(models["softmax"], batches, PASSES, device="cpu")
    assert streamed.rows == 50 and streamed["path"].tolist() == [str(i) for i in range(50)]
    for name in whole:
        assert np.array_equal(whole[name], streamed[name]) if whole[name].dtype != object \
            else whole[name].tolist() == streamed[name].tolist(), name
    assert whole["label"].tolist() == [DIGIT_CLASSES[i % 10] for i in range(50)]


def test_memory_stays_flat_over_the_number_of_batches(models):
    session = scorer.open_model(models["softmax"], "cpu")
    images = pixels_for(models["softmax"], 64)

    def peak(batches: int) -> int:
        tracemalloc.start()
        try:
            for part in scorer.iter_predict(session, (images for _ in range(batches)), 4,
                                            device="cpu"):
                assert part.rows == 32  # the default batch on the CPU
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    few, many = peak(3), peak(30)
    assert many < 1.3 * few + (256 << 10), (few, many)


def test_an_opened_model_is_reused_and_gives_the_same_numbers(models):
    images = pixels_for(models["softmax"], 5)
    session = scorer.open_model(models["softmax"], "cpu")
    assert scorer.open_model(session) is session
    first = scorer.predict(session, images, PASSES)
    again = scorer.predict(models["softmax"].read_bytes(), images, PASSES, device="cpu")
    np.testing.assert_array_equal(first["mean"], again["mean"])
    assert first.attrs["model_sha256"] == again.attrs["model_sha256"]


def test_non_finite_inputs_are_failed_rows_and_zero_images_give_empty_predictions(models):
    images = pixels_for(models["softmax"], 4).astype(np.float32)
    images[1, 3, 3] = np.nan
    images[3, 0, 0] = np.inf
    predictions = scorer.predict(models["softmax"], images, PASSES, device="cpu")
    assert predictions["status"].tolist() == ["ok", "non-finite input", "ok", "non-finite input"]
    assert np.isnan(predictions["mean"][[1, 3]]).all() and predictions["predicted_class"][1] == -1
    assert np.isfinite(predictions["mean"][[0, 2]]).all()
    empty = scorer.predict(models["softmax"], np.zeros((0, 16, 16), np.uint8), PASSES, device="cpu")
    assert empty.rows == 0 and empty["mean"].shape == (0, 10) and empty["status"].shape == (0,)


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 16), np.uint8), "rank 2"),
    (np.zeros((2, 8, 8), np.uint8), "8x8 pixels; the model takes 16x16"),
    (np.zeros((2, 16, 16, 3), np.uint8), "3 channels, the model expects 1"),
    (np.full((2, 16, 16), "x"), "are not numbers"),
    (np.zeros((2, 16, 16), bool), "are not numbers"),
    (np.full((2, 16, 16), 300.0), "from 300 to 300, outside 0..255.*preprocessed=True"),
    (np.full((2, 16, 16), -1.0), "outside 0..255"),
])
def test_bad_images_are_typed_errors_naming_what_was_expected(models, images, message):
    with pytest.raises(ArrayInputError, match=message):
        scorer.predict(models["softmax"], images, PASSES, device="cpu")


@pytest.mark.parametrize("labels, message", [([1, 2], "2 labels for 3 images"),
                                             ([1.5, 2, 3], "neither a class name nor"),
                                             ([True, 0, 1], "neither a class name nor")])
def test_bad_labels_are_typed_errors(models, labels, message):
    with pytest.raises(ArrayInputError, match=message):
        scorer.predict(models["softmax"], np.zeros((3, 16, 16), np.uint8), PASSES, device="cpu",
                       labels=labels)


def test_keys_are_the_sha256_of_each_image_when_asked_for(models):
    import hashlib

    images = pixels_for(models["softmax"], 3)
    keyed = scorer.predict(models["softmax"], images, 3, device="cpu", keys=True)
    assert keyed["key"].tolist() == [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    assert scorer.predict(models["softmax"], images, 3, device="cpu")["key"].tolist() == [""] * 3


def test_saved_predictions_are_a_results_file_that_compare_table_report_and_xarray_read(
        models, tmp_path):
    import xarray

    from scorer.report import ReportOptions, write_report

    pixels, digits = digit_images()
    images, labels = pixels[:30], digits[:30]
    predictions = scorer.predict(models["softmax"], images, PASSES, seed=2, device="cpu",
                                 labels=labels)
    saved = predictions.save(tmp_path / "predictions.h5")
    with pytest.raises(Exception, match="already exists"):
        predictions.save(saved)
    again = scorer.predict(models["softmax"], images, PASSES, seed=2, device="cpu", labels=labels)
    other = scorer.predict(models["softmax"], images, PASSES, seed=3, device="cpu", labels=labels)
    assert compare_results(saved, again.save(tmp_path / "again.h5")).ok
    assert not compare_results(saved, other.save(tmp_path / "other.h5")).ok
    assert predictions.to_pandas().equals(read_results(saved)), "to_pandas: read_results's table"
    opened, memory = xarray.open_dataset(saved, engine="h5netcdf"), predictions.to_xarray()
    assert set(opened.data_vars) == set(memory.data_vars)
    for name in opened.data_vars:
        assert opened[name].dims == memory[name].dims, name
        assert opened[name].values.tolist() == memory[name].values.tolist(), name
    assert opened["class"].values.tolist() == memory["class"].values.tolist() == list(DIGIT_CLASSES)
    summary = write_report(saved, None, ReportOptions(write_html=False))
    assert summary.numbers["classification"]["images"] == 30
    assert summary.numbers["classification"]["accuracy"] == pytest.approx(
        np.mean(predictions["predicted_class"] == labels))
