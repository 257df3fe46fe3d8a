"""The image galleries and failed-row examples of the report.

Only the images shown are read: each becomes a small PNG or JPEG inlined as a ``data:`` URI. An
image that cannot be found or decoded gets a text placeholder (never a broken ``<img>``).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from scorer.report.analysis import output_names
from scorer.report.columns import RowTable
from scorer.report.load import ResultsReader
from scorer.results.reader import exact_path
from scorer.results.writer import RAW_PATHS

THUMBNAIL_PIXELS = 128
"""Longest side of a thumbnail; smaller images are enlarged (nearest neighbour) to ``MIN_PIXELS``."""
MIN_PIXELS = 96


@dataclass
class Tile:
    """One gallery image.

    Attributes:
        row: Row index in the results file.
        path: The ``path`` column.
        facts: ``(name, value)`` pairs shown under the image.
        image: ``data:`` URI of the thumbnail, or ``None``.
        problem: Why there is no thumbnail (``None`` when there is one).
    """

    row: int
    path: str
    facts: list[tuple[str, str]]
    image: str | None
    problem: str | None


def extreme_rows(table: RowTable, count: int,
                 measure: str | None = None) -> tuple[list[int], list[int]]:
    """Rows of the ``count`` most and least uncertain scored images by ``measure`` (default: the
    table's ranking measure).

    Ties are broken by row order, so the galleries do not depend on the sorting algorithm.
    """
    values = table.measures.get(measure or table.ranking_measure)
    if values is None or count == 0:
        return [], []
    candidates = np.flatnonzero(table.ok & np.isfinite(values))
    if candidates.size == 0:
        return [], []
    scores = values[candidates].astype(np.float64)
    most = candidates[np.lexsort((candidates, -scores))[:count]]
    least = candidates[np.lexsort((candidates, scores))[:count]]
    return most.tolist(), least.tolist()


def images_folder(table: RowTable, override: Path | None) -> Path | None:
    """The folder image paths are relative to: ``override``, else the file's ``images_root``.

    A relative ``images_root`` is tried against the working directory, then the results file's
    folder. Returns ``None`` when no such folder exists.
    """
    if override is not None:
        return Path(override) if Path(override).is_dir() else None
    root = table.info.images_root
    if not root:
        return None
    candidates = [Path(root)] if Path(root).is_absolute() else [Path(root),
                                                                  table.info.path.parent / root]
    return next((c for c in candidates if c.is_dir()), None)


def _eight_bit(image: Image.Image) -> Image.Image:
    """``L`` or ``RGB``; 16-bit, 32-bit and float grey images are scaled to 0..255 by their maximum."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = pixels.max() if pixels.size and pixels.max() > 0 else 1.0
        return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8))
    return image.convert("L" if image.mode in ("1", "L", "LA") else "RGB")


def thumbnail_uri(file: Path) -> str:
    """A ``data:`` URI of a small copy of the image ``file``.

    Raises:
        OSError: The file cannot be read or decoded (also for bombs and bad data).
    """
    try:
        with Image.open(file) as opened:
            if opened.format == "JPEG":
                opened.draft("RGB", (THUMBNAIL_PIXELS * 2, THUMBNAIL_PIXELS * 2))
            image = _eight_bit(ImageOps.exif_transpose(opened))
    except (ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise OSError(str(err)) from err
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    if max(image.size) < MIN_PIXELS:
        factor = math.ceil(MIN_PIXELS / max(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    lossless = image.mode == "L" or max(image.size) <= MIN_PIXELS
    image.save(buffer, format="PNG" if lossless else "JPEG", quality=85)
    mime = "image/png" if lossless else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _facts(table: RowTable, rows: list[int], means: np.ndarray) -> list[list[tuple[str, str]]]:
    names = output_names(table)
    kind = table.info.kind
    result = []
    for i, row in enumerate(rows):
        facts: list[tuple[str, str]] = []
        if kind == "probabilities" and table.predicted is not None:
            predicted = int(table.predicted[row])
            facts.append(("predicted", names[predicted] if 0 <= predicted < len(names) else str(predicted)))
            facts.append(("probability", f"{float(table.confidence[row]):.3f}"))
        elif kind == "multilabel":
            on = [c for c in np.argsort(-means[i]) if means[i, c] > 0.5][:3]
            facts.append(("labels", ", ".join(f"{names[c]} {means[i, c]:.2f}" for c in on) or "none"))
        else:
            shown = ", ".join(f"{v:.3g}" for v in means[i, :3]) + (" ..." if means.shape[1] > 3 else "")
            facts.append(("mean", shown))
        for measure in ("mutual_information", "std"):
            if measure in table.measures:
                facts.append(("MI" if measure == "mutual_information" else "std",
                              f"{float(table.measures[measure][row]):.4f}"))
                break
        if table.label_codes is not None and table.label_values[table.label_codes[row]]:
            facts.append(("label", table.label_values[table.label_codes[row]]))
        result.append(facts)
    return result


def gallery(reader: ResultsReader, table: RowTable, rows: list[int], folder: Path | None) -> list[Tile]:
    """Tiles for ``rows``: thumbnail read from ``folder / path``, facts from the table."""
    paths = reader.strings_at("path", rows)  # display text (\xNN escapes), the HTML's
    raw = reader.strings_at(RAW_PATHS, rows) if reader.has(RAW_PATHS) else [""] * len(rows)
    needs_means = table.info.kind != "probabilities" and reader.has("mean")
    means = reader.matrix_rows("mean", rows) if needs_means else np.zeros((len(rows), 0))
    tiles = []
    for row, path, exact, facts in zip(rows, paths, raw, _facts(table, rows, means), strict=True):
        image, problem = None, None
        if folder is None:
            problem = "images folder not found (give --images)"
        else:
            try:
                image = thumbnail_uri(folder / (exact_path(exact) if exact else path))
            except OSError as err:
                problem = f"cannot read the image ({err.__class__.__name__})"
        tiles.append(Tile(row, path, facts, image, problem))
    return tiles


def failure_examples(reader: ResultsReader, table: RowTable,
                     per_reason: int = 3) -> dict[str, list[tuple[str, str]]]:
    """Up to ``per_reason`` ``(path, detail)`` examples of each failure status."""
    examples: dict[str, list[tuple[str, str]]] = {}
    for code, status in enumerate(table.status_values):
        if status == "ok":
            continue
        rows = np.flatnonzero(table.status_codes == code)[:per_reason].tolist()
        paths = reader.strings_at("path", rows)
        details = reader.strings_at("reason", rows) if reader.has("reason") else [""] * len(rows)
        examples[status] = list(zip(paths, details, strict=True))
    return examples
