"""The results file schema: every dataset, its dtype, dimensions and meaning, in one place.

This module is the single source of the dataset and metric names: :mod:`scorer.metrics.uncertainty` computes
exactly :func:`metric_names`, the writer creates :func:`dataset_specs`, :mod:`scorer.results.compare` and the
reader look them up here, and a test checks the README against :func:`dataset_descriptions`.

Dimensions follow netCDF-4 / xarray conventions (HDF5 dimension scales): ``image`` (one row per
input, in input order), ``class`` (the model's classes or labels; ``output`` for a ``values``
head) and ``pass`` (the stochastic passes, only with ``save_passes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scorer.contract import OUTPUT_KINDS

SCHEMA_VERSION = 2
"""Version 2: netCDF-style dimension scales, ``reason``, ``multilabel`` heads, no ``rows_complete``.
Version 1 files (flat datasets, ``rows_complete`` root attribute) are still read."""

IMAGE_DIM, PASS_DIM = "image", "pass"
STRING, FLOAT, INT = "str", "float32", "int64"
STRING_COLUMNS = ("path", "key", "status", "reason", "label")
STATUS_OK = "ok"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the results file.

    Attributes:
        name: Dataset name at the file root.
        dtype: ``"str"`` (UTF-8, variable length), ``"float32"`` or ``"int64"``.
        dims: Dimension names, the first always ``"image"``; ``"class"`` stands for the output
            dimension, named by :func:`class_dim`.
        description: One sentence, stored as the dataset's ``description`` attribute.
        when: ``"always"``, ``"labels"``, ``"save_passes"`` or an output kind.
    """

    name: str
    dtype: str
    dims: tuple[str, ...]
    description: str
    when: str = "always"

    @property
    def is_metric(self) -> bool:
        return self.name not in STRING_COLUMNS and self.name != "passes"

    def shape_text(self, kind: str = "probabilities") -> str:
        """The shape as written in the README, e.g. ``"[image, class]"``."""
        return "[" + ", ".join(self.dims_for(kind)) + "]"

    def dims_for(self, kind: str) -> tuple[str, ...]:
        return tuple(class_dim(kind) if d == "class" else d for d in self.dims)

    def row_shape(self, num_outputs: int, passes: int) -> tuple[int, ...]:
        """Shape of one row (every dimension after ``image``)."""
        sizes = {"class": num_outputs, PASS_DIM: passes}
        return tuple(sizes[d] for d in self.dims[1:])

    def fill_value(self) -> object:
        """The value of a row whose image could not be scored."""
        return {STRING: "", FLOAT: np.nan, INT: -1}[self.dtype]


def _spec(name: str, dtype: str, dims: str, description: str, when: str = "always") -> DatasetSpec:
    return DatasetSpec(name, dtype, tuple(dims.split()), description, when)


_PER_CLASS = "image class"
SCHEMA: tuple[DatasetSpec, ...] = (
    _spec("path", STRING, "image", "the image path relative to IMAGES (or as listed), in input "
          "order; bytes that are not UTF-8 appear as \\xNN escapes (exact bytes in path_bytes_hex)"),
    _spec("key", STRING, "image", "SHA-256 hex of the image file bytes, empty if unreadable "
          "(in-memory images: of the image's bytes, when asked for)"),
    _spec("status", STRING, "image", "'ok' if the image was scored, else the failure code"),
    _spec("reason", STRING, "image", "why the image failed, in words; empty for ok rows"),
    _spec("label", STRING, "image", "the class folder of the image (top-level sub-folder of "
          "IMAGES), empty where none", "labels"),
    _spec("mean", FLOAT, _PER_CLASS, "mean over the T passes of each output"),
    _spec("std", FLOAT, _PER_CLASS, "population standard deviation over the T passes of each "
          "output"),
    _spec("predicted_class", INT, "image", "index of the largest mean probability, -1 for failed "
          "rows", "probabilities"),
    _spec("confidence", FLOAT, "image", "the largest mean probability (of the predicted class)",
          "probabilities"),
    _spec("label_entropy", FLOAT, _PER_CLASS, "Bernoulli entropy of each label's mean probability, "
          "nats (total uncertainty per label)", "multilabel"),
    _spec("label_expected_entropy", FLOAT, _PER_CLASS, "mean over passes of each label's Bernoulli "
          "entropy, nats (aleatoric per label)", "multilabel"),
    _spec("label_mutual_information", FLOAT, _PER_CLASS, "label_entropy - label_expected_entropy, "
          "nats (epistemic per label)", "multilabel"),
    _spec("predictive_entropy", FLOAT, "image", "entropy of the mean prediction, nats (total "
          "uncertainty; multilabel: summed over labels)", "probabilistic"),
    _spec("normalized_entropy", FLOAT, "image", "predictive entropy / log C: 0 (certain) to 1 "
          "(uniform over the C classes)", "probabilities"),
    _spec("expected_entropy", FLOAT, "image", "mean over the T passes of each pass's entropy, nats "
          "(aleatoric; multilabel: summed over labels)", "probabilistic"),
    _spec("mutual_information", FLOAT, "image", "predictive minus expected entropy, nats "
          "(epistemic, BALD; multilabel: summed over labels)", "probabilistic"),
    _spec("variation_ratio", FLOAT, "image", "share of the T passes whose top class is not the "
          "modal class", "probabilities"),
    _spec("passes", FLOAT, "image pass class", "the raw output of every stochastic pass",
          "save_passes"),
)
_BY_NAME = {spec.name: spec for spec in SCHEMA}


def check_kind(kind: str) -> None:
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {OUTPUT_KINDS}")


def class_dim(kind: str) -> str:
    """The name of the output dimension: ``class``, or ``output`` for a ``values`` head."""
    return "output" if kind == "values" else "class"


def _enabled(spec: DatasetSpec, kind: str, save_passes: bool, has_labels: bool) -> bool:
    return {"always": True, "labels": has_labels, "save_passes": save_passes,
            "probabilistic": kind in ("probabilities", "multilabel")}.get(spec.when, spec.when == kind)


def normalized_entropy(predictive_entropy: np.ndarray, classes: int) -> np.ndarray:
    """``normalized_entropy``: the predictive entropy as stored (float32) over ``log C``, float64.

    Computed from the stored value so that a file written before the dataset existed derives, from
    its ``predictive_entropy``, exactly what a new run stores; 0 for a single class. Clipped to 1
    (the float32 rounding of an entropy of ``log C`` may lie above it).
    """
    stored = np.asarray(predictive_entropy, dtype=np.float32).astype(np.float64)
    return np.minimum(stored / np.log(classes), 1.0) if classes > 1 else np.zeros_like(stored)


def dataset_specs(kind: str, save_passes: bool = False, has_labels: bool = False) -> list[DatasetSpec]:
    """The datasets a results file of this kind holds, in schema order."""
    check_kind(kind)
    return [spec for spec in SCHEMA if _enabled(spec, kind, save_passes, has_labels)]


def metric_names(kind: str) -> tuple[str, ...]:
    """The metrics :mod:`scorer.metrics.uncertainty` computes for an output kind, in schema order."""
    return tuple(spec.name for spec in dataset_specs(kind) if spec.is_metric)


def spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; KeyError if the schema has no such dataset."""
    return _BY_NAME[name]


def dataset_descriptions(kind: str, save_passes: bool = True,
                         has_labels: bool = True) -> list[tuple[str, str, str, str]]:
    """``(name, dtype, shape, description)`` of each dataset, for the README and its test."""
    return [(s.name, s.dtype, s.shape_text(kind), s.description)
            for s in dataset_specs(kind, save_passes, has_labels)]


@dataclass(frozen=True)
class FileHeader:
    """What a results file is: its shape, its classes and its provenance attributes."""

    kind: str
    num_outputs: int
    passes: int
    seed: int
    save_passes: bool
    has_labels: bool
    class_names: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The coordinate of the class dimension: the class names, else ``"0"``..``"C-1"``."""
        if self.class_names and len(self.class_names) == self.num_outputs:
            return list(self.class_names)
        return [str(i) for i in range(self.num_outputs)]

    def root_attrs(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "kind": self.kind,
                "num_outputs": int(self.num_outputs), "passes": int(self.passes),
                "seed": int(self.seed), "save_passes": bool(self.save_passes),
                "has_labels": bool(self.has_labels)}
