"""scorer.images.arrays: images in memory become the rows their files decode to."""

from __future__ import annotations

import numpy as np
import pytest

from scorer.contract import ModelMetadata, Preprocessing
from scorer.images.arrays import ArrayInputError, array_batches, as_inputs, label_texts
from scorer.images.decode import normalise

PRE = Preprocessing(height=4, width=5, color_mode="rgb", scale=1 / 127.5, offset=-1.0,
                    mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))


def metadata(layout: str) -> ModelMetadata:
    shape = (None, 3, 4, 5) if layout == "NCHW" else (None, 4, 5, 3)
    return ModelMetadata(input_shape=shape, layout=layout, preprocessing=PRE,
                         output_kind="probabilities", head="softmax", num_outputs=2,
                         dropout_sites=(), class_names=("cat", "dog"))


PIXELS = np.random.default_rng(0).integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_rows_equal_the_decoder_s_normalisation_image_by_image(layout):
    rows = as_inputs(PIXELS, metadata(layout))
    for image, row in zip(PIXELS, rows, strict=True):
        np.testing.assert_array_equal(row, normalise(image, PRE, layout))


def test_preprocessed_values_are_laid_out_for_the_model_and_not_changed():
    values = np.random.default_rng(1).random((6, 4, 5, 3))
    nchw = as_inputs(values, metadata("NCHW"), preprocessed=True)
    np.testing.assert_array_equal(nchw, values.astype(np.float32).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(as_inputs(nchw, metadata("NCHW"), preprocessed=True), nchw)


def test_labels_become_class_names_and_batches_number_images_over_the_source():
    assert label_texts([1, "dog", np.int64(0), 5], 4, ("cat", "dog")) == ["dog", "dog", "cat", "5"]
    batches = list(array_batches(iter([(PIXELS[:4], [0, 1, 0, 1]), PIXELS[4:]]), metadata("NHWC"),
                                 batch_size=3))
    assert [[ref.path for ref in b.refs] for b in batches] == [["0", "1", "2"], ["3"], ["4", "5"]]
    assert [ref.label for ref in batches[0].refs] == ["cat", "dog", "cat"]
    assert [ref.label for ref in batches[2].refs] == [None, None]


def test_labels_of_an_iterable_come_with_its_batches():
    with pytest.raises(ArrayInputError, match="as \\(images, labels\\) pairs"):
        list(array_batches(iter([PIXELS]), metadata("NHWC"), 3, labels=[0] * 6))
