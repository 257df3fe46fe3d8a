"""Regression comparison of two results files, row by row matched on ``path``.

Float datasets (``mean``/``std`` ``[N, C]``, the ``[N]`` uncertainty metrics and, when both
files have it, ``passes`` ``[N, T, C]``) are compared like :func:`numpy.isclose`:
``|new - ref| <= atol + rtol * |ref|``, NaN in both counts as equal, NaN in one only differs.
``predicted_class``, ``status``, ``key`` and ``label`` are compared exactly. A dataset of the
reference that the new file lacks makes the comparison fail. Datasets are read one at a time and
compared in row blocks, so memory is about two datasets.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from scorer.results.reader import data_names, open_results, read_attrs, read_dataset

EXACT_DATASETS = ("predicted_class", "status", "key", "label")
SKIPPED_DATASETS = ("path", "reason")
"""``path`` matches rows; ``reason`` is prose (schema 1 files have none), not compared."""
PROVENANCE_ATTRS = ("model_sha256", "seed", "passes", "pass_chunk", "kind", "num_outputs",
                    "schema_version")
SHAPE_ATTRS = ("kind", "num_outputs")
"""Provenance attributes that make metrics incomparable when they differ."""
BLOCK_ROWS = 1 << 16


@dataclass(frozen=True)
class WorstRow:
    """One image out of tolerance: the element of its row that differs most.

    Attributes:
        path: The image path.
        element: Index within the row: ``()`` for ``[N]``, ``(c,)`` for ``[N, C]``,
            ``(t, c)`` for ``[N, T, C]``.
        ref: Value in the reference file.
        new: Value in the new file.
        abs_diff: ``|new - ref|`` (``inf`` if exactly one is NaN).
    """

    path: str
    element: tuple[int, ...]
    ref: float
    new: float
    abs_diff: float


@dataclass(frozen=True)
class MetricDiff:
    """Tolerance comparison of one float dataset over the matched rows."""

    name: str
    max_abs_diff: float
    rows_out_of_tolerance: int
    worst: list[WorstRow]


@dataclass(frozen=True)
class ExactDiff:
    """Exact comparison of one dataset: rows changed and the first few ``(path, ref, new)``."""

    name: str
    rows_changed: int
    examples: list[tuple[str, object, object]]


@dataclass(frozen=True)
class AttrDiff:
    """A provenance root attribute that differs (``None`` where it is missing)."""

    name: str
    ref: object
    new: object


@dataclass
class Comparison:
    """Result of :func:`compare_results`; ``ok`` when everything matches within tolerance."""

    ref: Path
    new: Path
    atol: float
    rtol: float
    rows_ref: int
    rows_new: int
    rows_matched: int
    metrics: list[MetricDiff] = field(default_factory=list)
    exact: list[ExactDiff] = field(default_factory=list)
    only_in_ref: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)
    missing_datasets: list[str] = field(default_factory=list)
    provenance: list[AttrDiff] = field(default_factory=list)
    incomparable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no metric is out of tolerance, nothing changed and every path matched."""
        return not (self.incomparable or self.only_in_ref or self.only_in_new
                    or self.missing_datasets or any(m.rows_out_of_tolerance for m in self.metrics)
                    or any(e.rows_changed for e in self.exact))


def match_rows(ref_paths: np.ndarray, new_paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(ref_rows, new_rows)`` of the same paths, in reference order.

    A path listed k times is matched occurrence by occurrence.
    """
    new_rows: dict[tuple[str, int], int] = {}
    seen: dict[str, int] = {}
    for row, path in enumerate(new_paths):
        occurrence = seen.get(path, 0)
        seen[path] = occurrence + 1
        new_rows[(path, occurrence)] = row
    ref_index, new_index = [], []
    seen.clear()
    for row, path in enumerate(ref_paths):
        occurrence = seen.get(path, 0)
        seen[path] = occurrence + 1
        match = new_rows.get((path, occurrence))
        if match is not None:
            ref_index.append(row)
            new_index.append(match)
    return np.asarray(ref_index, dtype=np.int64), np.asarray(new_index, dtype=np.int64)


def compare_results(ref: Path, new: Path, atol: float = 1e-6, rtol: float = 1e-5,
                    worst: int = 5) -> Comparison:
    """Compare a new results file against a reference, matching rows by ``path``.

    Args:
        ref: The reference results file.
        new: The results file under test.
        atol: Absolute tolerance for float datasets.
        rtol: Tolerance relative to the reference value.
        worst: How many worst images to list per metric (and changed rows per exact dataset).

    Raises:
        scorer.errors.OutputError: A file is missing or not an mcd-score results file.
    """
    ref, new = Path(ref), Path(new)
    with open_results(ref) as ref_file, open_results(new) as new_file:
        ref_paths = read_dataset(ref_file, "path")
        new_paths = read_dataset(new_file, "path")
        ref_rows, new_rows = match_rows(ref_paths, new_paths)
        comparison = Comparison(ref, new, atol, rtol, len(ref_paths), len(new_paths),
                                len(ref_rows))
        _compare_provenance(comparison, read_attrs(ref_file), read_attrs(new_file))
        comparison.only_in_ref = _unmatched(ref_paths, ref_rows)
        comparison.only_in_new = _unmatched(new_paths, new_rows)
        if comparison.incomparable:
            return comparison
        matched_paths = ref_paths[ref_rows]
        for name in _shared_datasets(comparison, ref_file, new_file):
            ref_values = read_dataset(ref_file, name)[ref_rows]
            new_values = read_dataset(new_file, name)[new_rows]
            if ref_values.shape != new_values.shape:
                comparison.notes.append(f"{name} not compared: shape {ref_values.shape[1:]} "
                                        f"per row in ref, {new_values.shape[1:]} in new")
            elif name in EXACT_DATASETS or ref_values.dtype.kind not in "fc":
                comparison.exact.append(
                    _compare_exact(name, matched_paths, ref_values, new_values, worst))
            else:
                comparison.metrics.append(_compare_floats(
                    name, matched_paths, ref_values, new_values, atol, rtol, worst))
    return comparison


def _compare_provenance(comparison: Comparison, ref_attrs: dict[str, object],
                        new_attrs: dict[str, object]) -> None:
    for name in PROVENANCE_ATTRS:
        ref_value, new_value = ref_attrs.get(name), new_attrs.get(name)
        if ref_value != new_value:
            comparison.provenance.append(AttrDiff(name, ref_value, new_value))
            if name in SHAPE_ATTRS:
                comparison.incomparable.append(
                    f"{name} differs ({ref_value!r} in ref, {new_value!r} in new): "
                    "the metrics cannot be compared")


def _unmatched(paths: np.ndarray, matched_rows: np.ndarray) -> list[str]:
    unmatched = np.ones(len(paths), dtype=bool)
    unmatched[matched_rows] = False
    return [str(p) for p in paths[unmatched]]


def _shared_datasets(comparison: Comparison, ref_file: h5py.File,
                     new_file: h5py.File) -> list[str]:
    """Datasets in both files (except ``path``) in schema order, noting those in one only."""
    ref_names = [n for n in data_names(ref_file) if n not in SKIPPED_DATASETS]
    new_names = {n for n in data_names(new_file) if n not in SKIPPED_DATASETS}
    comparison.missing_datasets = [n for n in ref_names if n not in new_names]
    for name in sorted(new_names - set(ref_names)):
        comparison.notes.append(f"{name} not compared: only the new file has it")
    return [name for name in ref_names if name in new_names]  # data_names: in schema order


def _compare_exact(name: str, paths: np.ndarray, ref_values: np.ndarray,
                   new_values: np.ndarray, worst: int) -> ExactDiff:
    changed = np.flatnonzero(ref_values != new_values)
    examples = [(str(paths[row]), _plain(ref_values[row]), _plain(new_values[row]))
                for row in changed[:worst]]
    return ExactDiff(name, int(len(changed)), examples)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _compare_floats(name: str, paths: np.ndarray, ref_values: np.ndarray,
                    new_values: np.ndarray, atol: float, rtol: float,
                    worst: int) -> MetricDiff:
    """Tolerance comparison in row blocks; keeps the ``worst`` rows out of tolerance."""
    max_diff = 0.0
    rows_out = 0
    candidates: list[tuple[float, int, int]] = []  # (abs diff, -row, flat element), a min-heap
    row_shape = ref_values.shape[1:]
    for start in range(0, len(ref_values), BLOCK_ROWS):
        ref_block = ref_values[start:start + BLOCK_ROWS].reshape(-1, int(np.prod(row_shape)))
        new_block = new_values[start:start + BLOCK_ROWS].reshape(ref_block.shape)
        diff, close = element_differences(ref_block, new_block, atol, rtol)
        if diff.size:
            max_diff = max(max_diff, float(diff.max()))
        bad_rows = np.flatnonzero(~close.all(axis=1))
        rows_out += len(bad_rows)
        if not len(bad_rows) or worst <= 0:
            continue
        bad_diff = np.where(close[bad_rows], -1.0, diff[bad_rows])
        elements = bad_diff.argmax(axis=1)
        row_diffs = bad_diff[np.arange(len(bad_rows)), elements]
        for k in np.argsort(-row_diffs, kind="stable")[:worst]:
            item = (float(row_diffs[k]), -(start + int(bad_rows[k])), int(elements[k]))
            if len(candidates) < worst:
                heapq.heappush(candidates, item)
            else:
                heapq.heappushpop(candidates, item)
    worst_rows = []
    for abs_diff, negative_row, element in sorted(candidates, reverse=True):
        index = np.unravel_index(element, row_shape) if row_shape else ()
        full = (-negative_row, *index)
        worst_rows.append(WorstRow(str(paths[-negative_row]), tuple(int(i) for i in index),
                                   float(ref_values[full]), float(new_values[full]), abs_diff))
    return MetricDiff(name, max_diff, rows_out, worst_rows)


def element_differences(ref: np.ndarray, new: np.ndarray, atol: float,
                        rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """``(|new - ref|, within tolerance)`` elementwise, as float64 and bool arrays.

    Equal values (including equal infinities) and NaN in both differ by 0; NaN in one only
    differs by ``inf`` and is out of tolerance.
    """
    ref64 = np.asarray(ref, dtype=np.float64)
    new64 = np.asarray(new, dtype=np.float64)
    close = np.isclose(new64, ref64, atol=atol, rtol=rtol, equal_nan=True)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(new64 - ref64)
    ref_nan, new_nan = np.isnan(ref64), np.isnan(new64)
    diff[(new64 == ref64) | (ref_nan & new_nan)] = 0.0
    diff[ref_nan ^ new_nan] = np.inf
    return diff, close


def format_comparison(c: Comparison) -> str:
    """A readable multi-line report ending in ``OK: ...`` or ``DIFFERENT: ...``."""
    lines = [f"ref: {c.ref} ({c.rows_ref} rows)", f"new: {c.new} ({c.rows_new} rows)",
             f"{c.rows_matched} rows matched by path; tolerance atol={c.atol:g}, "
             f"rtol={c.rtol:g}", ""]
    if c.metrics or c.exact:
        width = max(len(r.name) for r in [*c.metrics, *c.exact]) + 2
        lines.append(f"{'dataset':<{width}}{'max |diff|':>12}  out of tolerance")
        for m in c.metrics:
            lines.append(f"{m.name:<{width}}{m.max_abs_diff:>12.3g}  {m.rows_out_of_tolerance}")
        for e in c.exact:
            lines.append(f"{e.name:<{width}}{'exact':>12}  {e.rows_changed} changed")
        lines.append("")
    worst = [(m.name, w) for m in c.metrics for w in m.worst]
    if worst:
        lines.append("Worst images:")
        for name, w in worst:
            where = f"[{', '.join(map(str, w.element))}]" if w.element else ""
            lines.append(f"  {name}{where}  {w.path}: ref {w.ref:.7g}, new {w.new:.7g} "
                         f"(|diff| {w.abs_diff:.3g})")
        lines.append("")
    changed = [(e.name, example) for e in c.exact for example in e.examples]
    if changed:
        lines.append("Changed rows:")
        for name, (path, ref_value, new_value) in changed:
            lines.append(f"  {name}  {path}: ref {ref_value!r}, new {new_value!r}")
        lines.append("")
    for label, paths in (("Only in ref", c.only_in_ref), ("Only in new", c.only_in_new)):
        if paths:
            shown = ", ".join(paths[:10]) + (", ..." if len(paths) > 10 else "")
            lines.append(f"{label} ({len(paths)}): {shown}")
    if c.provenance:
        lines.append("Provenance differs:")
        for a in c.provenance:
            lines.append(f"  ! {a.name}: ref {_show(a.ref)}, new {_show(a.new)}")
    lines.extend(f"Note: {note}" for note in c.notes)
    lines.append(_verdict(c))
    return "\n".join(lines)


def _show(value: object) -> str:
    return "(missing)" if value is None else repr(value)


def _verdict(c: Comparison) -> str:
    if c.ok:
        flagged = f"; provenance differs: {', '.join(a.name for a in c.provenance)}" \
            if c.provenance else ""
        return (f"OK: {c.rows_matched} rows match within atol={c.atol:g}, "
                f"rtol={c.rtol:g}{flagged}")
    problems = list(c.incomparable)
    problems += [f"{m.name}: {m.rows_out_of_tolerance} rows out of tolerance"
                 for m in c.metrics if m.rows_out_of_tolerance]
    problems += [f"{e.name}: {e.rows_changed} rows changed" for e in c.exact if e.rows_changed]
    if c.only_in_ref:
        problems.append(f"{len(c.only_in_ref)} paths only in ref")
    if c.only_in_new:
        problems.append(f"{len(c.only_in_new)} paths only in new")
    if c.missing_datasets:
        problems.append(f"new lacks datasets the reference has: {', '.join(c.missing_datasets)}")
    return "DIFFERENT: " + "; ".join(problems)

