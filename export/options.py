"""What an export is asked (:class:`ExportOptions`) and what it decided and wrote: the types every
front end (``from_keras``, ``from_onnx``) and the shared assembly use. Imports no framework."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from export.errors import ExportUsageError
from scorer.contract import LAYOUTS, DropoutSite, ModelMetadata, Preprocessing

ATOL = 1e-5  # the least tolerance of the exact-parity checks (see export.checks.noise)
HEADS = ("softmax", "sigmoid", "multilabel", "linear")
PRESETS = {
    # torchvision's ImageNet models: pixels / 255, then ImageNet's mean and std per channel
    "torchvision": (1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class ExportOptions:
    """Options of an export; ``None`` means "derive from the model"."""

    unsafe: bool = False
    strict: bool = False
    input_size: tuple[int, int] | None = None
    output: str | None = None
    color_mode: str | None = None
    scale: float | None = None  # None: 1/255, or 1 when the model rescales its input itself
    offset: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_method: str = "bilinear"
    class_names: tuple[str, ...] | None = None
    trunk: str = "cached"
    mc_layers: tuple[str, ...] | None = None  # names or globs of the sampled layers; None: all
    validate: bool = True
    validation_passes: int = 200
    validation_seed: int = 0
    tolerance: float | None = None  # None: from the measured float32 noise floor, at least ATOL
    max_memory: int = 2048  # MB of working memory per validation call
    head: str | None = None  # ONNX graphs ending in logits: softmax | sigmoid | multilabel | linear
    layout: str | None = None  # ONNX graphs: NCHW | NHWC, when the input shape does not tell
    preprocessing: str | None = None  # a preset of scale, mean and std: "torchvision"

    def __post_init__(self) -> None:
        if self.head is not None and self.head not in HEADS:
            raise ExportUsageError(f"head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ExportUsageError(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.preprocessing is None:
            return
        if self.preprocessing not in PRESETS:
            raise ExportUsageError(f"preprocessing {self.preprocessing!r} is not one of "
                                   f"{', '.join(PRESETS)}")
        if (self.scale, self.mean, self.std) != (None, None, None):
            raise ExportUsageError(f"preprocessing {self.preprocessing!r} sets scale, mean and "
                                   "std: give either it or --scale/--mean/--std")
        scale, mean, std = PRESETS[self.preprocessing]
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)


@dataclass
class ExportResult:
    """What was written and what was checked."""

    path: Path | None
    metadata: ModelMetadata
    model: onnx.ModelProto
    warnings: list[str] = field(default_factory=list)
    report: list[str] = field(default_factory=list)  # validation, one line per check
    notes: list[str] = field(default_factory=list)  # preprocessing, sites, hints
    rewrites: list[str] = field(default_factory=list)  # what each graph rewrite changed, in order


@dataclass
class Head:
    """The output the graph reports: its index among the model's outputs, its name, the
    activation read from it (``softmax``, ``sigmoid`` or ``linear``), its width (units, or
    channels per pixel) and, for dense outputs, its spatial size ``(H, W)`` (channels last)."""

    index: int
    name: str
    activation: str
    width: int
    spatial: tuple[int, ...] = ()


@dataclass(frozen=True)
class Choice:
    """The preprocessing chosen, where it came from and the built-in layers found."""

    layout: str
    preprocessing: Preprocessing
    origin: str  # scorer.contract.PREPROCESSING_ORIGINS
    built_in: tuple[str, ...]
    preset: str | None = None

    def note(self) -> str:
        """One line for the export report."""
        pre = self.preprocessing
        scaling = f"pixel * {pre.scale:g} + {pre.offset:g}"
        if pre.mean is not None or pre.std is not None:
            scaling += f", then (x - {pre.mean}) / {pre.std}"
        if self.origin == "model":
            return (f"the model rescales its input itself ({'; '.join(self.built_in)}): pixels "
                    f"0..255 are fed unscaled ({scaling}); give --scale to override")
        if self.origin == "options":
            source = f"--preprocessing {self.preset}" if self.preset else "--scale"
            extra = f"; the model also rescales: {'; '.join(self.built_in)}" if self.built_in else ""
            return f"pixels fed as {scaling} ({source}){extra}"
        return (f"pixels fed as {scaling} (default 1/255: no rescaling layer at the model's "
                "input); give --scale if the model was trained on other values")


@dataclass
class Inspection:
    """What a front end found in the source model: the image input, the head, the preprocessing,
    the dropout sites the converted graph gets mask inputs for and which of them are sampled."""

    shape: tuple[int, ...]
    head: Head
    choice: Choice
    sites: list[DropoutSite]  # every convertible site, numbered as converted
    sampled: list[int]  # indices into sites chosen by --mc-layers
    warnings: list[str]
    source_format: str  # keras | onnx
    producer: str  # the framework and version that wrote the source model


__all__ = ["ATOL", "HEADS", "PRESETS", "Choice", "ExportOptions", "ExportResult", "Head",
           "Inspection"]
