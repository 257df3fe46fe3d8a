"""The contract between mcd-export and mcd-score: graph interface and model metadata.

The scorer defines the file format it runs; the exporter writes against this module. It is pure
Python and numpy (no TensorFlow, no ONNX Runtime): the one place where the graph's input and
output names, the feeds of a call, the statistics each output kind has and the mask inputs of a
converted graph are spelled.

Everything the scorer needs to feed the graph and read its outputs travels inside the ``.onnx`` file
under one key, :data:`METADATA_KEY`, as JSON with a schema version. This module is pure Python so the
scorer can read it without TensorFlow.

Graph interface (names are fixed by the schema, not stored per model):

inputs
    ``images``      float32 ``[N, H, W, C]`` (layout ``NHWC``) or ``[N, C, H, W]`` (``NCHW``),
                    already preprocessed as :class:`Preprocessing` says.
    ``seed``        int64 scalar, ``0 <= seed < 2**63``.
    ``pass_start``  int64 scalar, index of the first pass computed by this call.
    ``pass_count``  int64 scalar, number of passes ``T`` computed by this call.
outputs (a dense model, ``map_shape`` ``(H, W)``: every ``C`` below is ``H, W, C``, channels
last whatever the source's layout, and ``entropy_sum`` is ``[N, H, W]``; statistics per pixel)
    ``passes``       float32 ``[N, T, C]``: per-pass probabilities (``output_kind == "probabilities"``)
                     or raw values (``"values"``).
    ``pass_sum``     float32 ``[N, C]``: sum over the T passes.
    ``pass_m2``      float32 ``[N, C]``: sum over the T passes of squared deviations from their mean.
    ``entropy_sum``  float32 ``[N]``: sum over passes of the entropy of each pass (probabilities only).
    ``votes``        float32 ``[N, C]``: number of passes whose argmax is each class (probabilities only).
    ``label_entropy_sum`` float32 ``[N, C]``: sum over passes of each label's Bernoulli entropy
                     ``-p log p - (1-p) log(1-p)`` (``multilabel`` only: independent sigmoid units).

Pass ``t`` of seed ``s`` uses the same dropout masks for every image, whatever ``pass_start`` or the
batch, so results can be computed in any batching or pass chunking and combined.

Before the exporter generates the masks in the graph, the converted graph takes each dropout
site's mask as inputs (:func:`mask_inputs`): ``mcd_mul_<k>`` (and ``mcd_add_<k>`` for alpha
dropout), shape ``[1, *mask_shape]``. The checks feed them to compare with the source model.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METADATA_KEY = "mcd_score"
SCHEMA_VERSION = 3
DENSE_SCHEMA_VERSION = 4
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)
"""Version 2 added ``preprocessing_origin``, ``built_in_preprocessing``, ``mc_layers``,
``per_pass_share`` and the sites' ``layer_class``, ``path`` and ``drop_path``; version 3 added
``source_format`` (``keras`` or ``onnx``) and ``producer``; version 4 added ``map_shape`` (dense
outputs), written only by dense models so that a scorer that cannot read their maps refuses them;
older files read with their defaults."""
RETIRED_FIELDS = ("input_name", "input_dtype")
"""Fields older exports wrote with constant values (``images``, ``float32``); ignored on reading."""

INPUT_IMAGES = "images"
INPUT_SEED = "seed"
INPUT_PASS_START = "pass_start"
INPUT_PASS_COUNT = "pass_count"
OUTPUT_PASSES = "passes"
OUTPUT_SUM = "pass_sum"
OUTPUT_M2 = "pass_m2"
OUTPUT_ENTROPY_SUM = "entropy_sum"
OUTPUT_VOTES = "votes"
OUTPUT_LABEL_ENTROPY_SUM = "label_entropy_sum"

OUTPUT_KINDS = ("probabilities", "multilabel", "values")
"""``probabilities``: one distribution over C classes per pass (softmax, or a one-unit sigmoid as
``[1 - p, p]``); ``multilabel``: C independent sigmoid probabilities; ``values``: raw outputs."""
STATISTICS = {
    "probabilities": (OUTPUT_SUM, OUTPUT_M2, OUTPUT_ENTROPY_SUM, OUTPUT_VOTES),
    "multilabel": (OUTPUT_SUM, OUTPUT_M2, OUTPUT_LABEL_ENTROPY_SUM),
    "values": (OUTPUT_SUM, OUTPUT_M2),
}
"""The statistics outputs of each output kind, besides ``passes``."""
MASK_MUL = "mcd_mul_{}"
MASK_ADD = "mcd_add_{}"
_MASK_NAME = re.compile(r"^mcd_(?:mul|add)_(\d+)$")
COLOR_MODES = ("rgb", "grayscale")
LAYOUTS = ("NHWC", "NCHW")
SOURCE_FORMATS = ("keras", "onnx")
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos", "box")
SITE_KINDS = ("dropout", "spatial_dropout", "gaussian_dropout", "alpha_dropout")
PREPROCESSING_ORIGINS = ("default", "model", "options")
"""``default``: mcd-export's defaults (pixels scaled by 1/255); ``model``: the model rescales or
normalises its input itself, so pixels are fed unscaled (0..255); ``options``: the user's ``--scale``."""


def feeds(images: np.ndarray, seed: int, pass_start: int, pass_count: int) -> dict[str, np.ndarray]:
    """The inputs of one call: passes ``[pass_start, pass_start + pass_count)`` of ``images``."""
    return {INPUT_IMAGES: np.ascontiguousarray(images, dtype=np.float32),
            INPUT_SEED: np.array(seed, np.int64),
            INPUT_PASS_START: np.array(pass_start, np.int64),
            INPUT_PASS_COUNT: np.array(pass_count, np.int64)}


def mask_inputs(index: int, additive: bool = False) -> tuple[str, ...]:
    """The converted graph's mask inputs of site ``index``: the multiplier, and the added term of
    sites that have one (``additive``: alpha dropout)."""
    return (MASK_MUL.format(index), MASK_ADD.format(index)) if additive else (MASK_MUL.format(index),)


def mask_site(name: str) -> int | None:
    """The site index of a mask input name (``mcd_mul_3`` -> 3), ``None`` for other names."""
    match = _MASK_NAME.match(name)
    return int(match[1]) if match else None


class MetadataError(ValueError):
    """The metadata is missing, malformed or of an unknown schema version."""


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an image file into one row of ``images``.

    Pixels are decoded to ``color_mode``, resized to ``height x width`` with ``resize_method``, then
    ``x = (pixel * scale + offset - mean[c]) / std[c]`` per channel ``c`` (``pixel`` in ``0..255``).
    """

    height: int
    width: int
    color_mode: str = "rgb"
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_method: str = "bilinear"

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    def check(self) -> None:
        """Raise :class:`MetadataError` if a field is out of range."""
        if self.height < 1 or self.width < 1:
            raise MetadataError(f"image size must be positive, got {self.height}x{self.width}")
        if self.color_mode not in COLOR_MODES:
            raise MetadataError(f"color_mode {self.color_mode!r} is not one of {COLOR_MODES}")
        if self.resize_method not in RESIZE_METHODS:
            raise MetadataError(
                f"resize_method {self.resize_method!r} is not one of {RESIZE_METHODS}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, self.channels):
                raise MetadataError(
                    f"{name} has {len(values)} values, expected 1 or {self.channels} "
                    f"for color mode {self.color_mode!r}"
                )
        if self.std is not None and any(s == 0 for s in self.std):
            raise MetadataError("std must not contain zeros")


@dataclass(frozen=True)
class DropoutSite:
    """One stochastic layer of the exported graph.

    ``mask_shape`` is the shape of one pass's mask without the batch axis (noise shape resolved),
    in the layout of the Keras layer's input. ``layer_class`` is the Keras class (``Dropout``,
    ``StochasticDepth``, ...), ``path`` the layer's place in nested models and layers
    (``efficientnetb0/block2a_drop``), and ``drop_path`` marks stochastic depth: one value per image
    slot that keeps or drops a whole residual branch.
    """

    name: str
    kind: str
    rate: float
    mask_shape: tuple[int, ...]
    layer_class: str = ""
    path: str = ""
    drop_path: bool = False

    @property
    def additive(self) -> bool:
        """Whether the site adds a term besides its multiplier (alpha dropout)."""
        return self.kind == "alpha_dropout"


@dataclass(frozen=True)
class ModelMetadata:
    """Everything stored under :data:`METADATA_KEY`."""

    input_shape: tuple[int | None, ...]
    layout: str
    preprocessing: Preprocessing
    output_kind: str
    head: str
    num_outputs: int
    dropout_sites: tuple[DropoutSite, ...]
    class_names: tuple[str, ...] | None = None
    source_sha256: str = ""
    source_name: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    opset: int = 0
    ir_version: int = 0
    trunk: str = "cached"
    bytes_per_image: int = 0
    bytes_per_image_pass: int = 0
    preprocessing_origin: str = "default"
    built_in_preprocessing: tuple[str, ...] = ()
    mc_layers: tuple[str, ...] | None = None
    per_pass_share: float | None = None
    source_format: str = "keras"
    producer: str = ""
    map_shape: tuple[int, ...] | None = None  # dense outputs: (H, W) of the per-pixel output
    schema_version: int = SCHEMA_VERSION

    @property
    def dense(self) -> bool:
        """Whether the graph's outputs are per-pixel maps (segmentation, dense regression)."""
        return self.map_shape is not None

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One image's output without the passes: ``(C,)``, or ``(H, W, C)`` for dense models."""
        return (*(self.map_shape or ()), self.num_outputs)

    def check(self) -> None:
        """Raise :class:`MetadataError` if the metadata is inconsistent."""
        if self.source_format not in SOURCE_FORMATS:
            raise MetadataError(
                f"source_format {self.source_format!r} is not one of {SOURCE_FORMATS}")
        if self.layout not in LAYOUTS:
            raise MetadataError(f"layout {self.layout!r} is not one of {LAYOUTS}")
        if self.output_kind not in OUTPUT_KINDS:
            raise MetadataError(f"output_kind {self.output_kind!r} is not one of {OUTPUT_KINDS}")
        if self.num_outputs < 1:
            raise MetadataError(f"num_outputs must be >= 1, got {self.num_outputs}")
        if self.class_names is not None and len(self.class_names) != self.num_outputs:
            raise MetadataError(
                f"{len(self.class_names)} class names for {self.num_outputs} outputs"
            )
        for site in self.dropout_sites:
            if site.kind not in SITE_KINDS:
                raise MetadataError(f"dropout site {site.name!r} has unknown kind {site.kind!r}")
        if self.preprocessing_origin not in PREPROCESSING_ORIGINS:
            raise MetadataError(f"preprocessing_origin {self.preprocessing_origin!r} is not one of "
                                f"{PREPROCESSING_ORIGINS}")
        if self.map_shape is not None and (
                len(self.map_shape) != 2 or any(int(d) < 1 for d in self.map_shape)):
            raise MetadataError(f"map_shape must be (height, width), got {self.map_shape}")
        if self.per_pass_share is not None and not 0.0 <= self.per_pass_share <= 1.0:
            raise MetadataError(f"per_pass_share must lie in [0, 1], got {self.per_pass_share}")
        self.preprocessing.check()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        """Parse :meth:`to_json` output; raise :class:`MetadataError` if it is not valid."""
        try:
            data: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as error:
            raise MetadataError(f"metadata is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise MetadataError("metadata is not a JSON object")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise MetadataError(
                f"metadata schema version {version!r} is not supported "
                f"(this mcd-score reads version "
                f"{' or '.join(str(v) for v in READABLE_SCHEMA_VERSIONS)}); re-export the model "
                "with a matching mcd-export or upgrade mcd-score"
            )
        for constant in RETIRED_FIELDS:
            data.pop(constant, None)
        try:
            pre = dict(data.pop("preprocessing"))
            for key in ("mean", "std"):
                if pre.get(key) is not None:
                    pre[key] = tuple(pre[key])
            sites = tuple(
                DropoutSite(**{**s, "rate": float(s["rate"]), "mask_shape": tuple(s["mask_shape"])})
                for s in data.pop("dropout_sites")
            )
            names = data.pop("class_names", None)
            patterns = data.pop("mc_layers", None)
            map_shape = data.pop("map_shape", None)
            meta = cls(
                map_shape=tuple(map_shape) if map_shape is not None else None,
                preprocessing=Preprocessing(**pre),
                dropout_sites=sites,
                class_names=tuple(names) if names is not None else None,
                input_shape=tuple(data.pop("input_shape")),
                built_in_preprocessing=tuple(data.pop("built_in_preprocessing", ())),
                mc_layers=tuple(patterns) if patterns is not None else None,
                **data,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise MetadataError(f"metadata is malformed: {error}") from error
        meta.check()
        return meta

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries to stamp on the ONNX model."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Read the metadata from a ``metadata_props`` mapping."""
        if METADATA_KEY not in props:
            raise MetadataError(
                f"the model has no {METADATA_KEY!r} metadata: it was not written by mcd-export; "
                "export it with `mcd-export MODEL.keras MODEL.onnx`"
            )
        return cls.from_json(props[METADATA_KEY])
