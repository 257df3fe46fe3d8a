"""Options of ``mcd-score report`` and what a finished report returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReportOptions:
    """How to build the report.

    Attributes:
        ood_labels: Labels (class-folder names) of out-of-distribution images, e.g. ``("ood",)``.
        images: Folder the ``path`` column is relative to, when the images moved since scoring
            (default: the file's ``images_root``).
        json_summary: Where to write the numbers as JSON (``None``: not written).
        write_html: Whether to write the HTML page (needs matplotlib); off gives numbers only.
        flag_fraction: Share of the most uncertain images flagged in the flagged-vs-rest table.
        max_points: Most images drawn in a scatter plot; more are sampled (the page says so).
        thumbnails: Images shown in each of the most and least uncertain galleries.
        seed: Seed of the scatter-plot sample.
    """

    ood_labels: tuple[str, ...] = ()
    images: Path | None = None
    json_summary: Path | None = None
    write_html: bool = True
    flag_fraction: float = 0.1
    max_points: int = 20000
    thumbnails: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.flag_fraction < 1.0:
            raise ValueError(f"flag_fraction must be between 0 and 1, got {self.flag_fraction}")
        if self.max_points < 1 or self.thumbnails < 0:
            raise ValueError("max_points must be >= 1 and thumbnails >= 0")


@dataclass
class ReportSummary:
    """What :func:`scorer.report.write_report` did.

    Attributes:
        numbers: The JSON summary (see the README's key table); ``None`` where a number does not
            apply.
        html_path: The page written, or ``None``.
        json_path: The JSON summary written, or ``None``.
        warnings: Things the user should know (e.g. an ``--ood`` label with no images).
    """

    numbers: dict[str, Any]
    html_path: Path | None = None
    json_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
