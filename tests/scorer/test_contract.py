"""Metadata schema 2: new fields round-trip, version-1 files still read with the new fields' defaults."""

from __future__ import annotations

import json

import onnx
import pytest
from paths import REGRESSION

from scorer.contract import MetadataError, ModelMetadata

REGRESSION_MODEL = REGRESSION / "model.onnx"


def props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_version_1_file_reads_with_defaults():
    text = props(onnx.load(REGRESSION_MODEL))["mcd_score"]
    assert json.loads(text)["schema_version"] == 1
    meta = ModelMetadata.from_json(text)
    assert meta.schema_version == 1
    assert (meta.preprocessing_origin, meta.built_in_preprocessing) == ("default", ())
    assert meta.mc_layers is None and meta.per_pass_share is None
    assert all((s.layer_class, s.path, s.drop_path) == ("", "", False) for s in meta.dropout_sites)


def test_version_3_round_trips(exports):
    meta = exports.get("mnist_cnn").metadata
    assert meta.schema_version == 3
    assert meta.source_format == "keras" and meta.producer.startswith("keras 3.")
    again = ModelMetadata.from_props(props(exports.get("mnist_cnn").onnx_model))
    assert again == meta
    assert [s.path for s in again.dropout_sites] == [s.name for s in meta.dropout_sites]
    assert 0 < again.per_pass_share < 1


def test_new_fields_are_checked(exports):
    data = json.loads(exports.get("mnist_cnn").metadata.to_json())
    for field, value, message in (("preprocessing_origin", "guessed", "preprocessing_origin"),
                                  ("per_pass_share", 1.5, "per_pass_share"),
                                  ("source_format", "caffe", "source_format"),
                                  ("schema_version", 5, "schema version 5"),
                                  ("map_shape", [32], "map_shape must be"),
                                  ("map_shape", [32, 0], "map_shape must be")):
        with pytest.raises(MetadataError, match=message):
            ModelMetadata.from_json(json.dumps({**data, field: value}))


def test_map_shape_reads_back_and_classifiers_have_none(exports):
    meta = exports.get("mnist_cnn").metadata
    assert meta.map_shape is None and not meta.dense and meta.output_shape == (meta.num_outputs,)
    data = {**json.loads(meta.to_json()), "map_shape": [8, 6], "schema_version": 4}
    dense = ModelMetadata.from_json(json.dumps(data))
    assert dense.map_shape == (8, 6) and dense.output_shape == (8, 6, meta.num_outputs)


def test_version_2_reads_with_the_defaults_of_version_3(exports):
    data = json.loads(exports.get("mnist_cnn").metadata.to_json())
    for field in ("source_format", "producer"):
        del data[field]
    meta = ModelMetadata.from_json(json.dumps({**data, "schema_version": 2}))
    assert (meta.schema_version, meta.source_format, meta.producer) == (2, "keras", "")
