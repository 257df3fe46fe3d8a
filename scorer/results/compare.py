"""Regression comparison of two results files, row by row matched on ``path``.

Float datasets (``mean``/``std`` ``[N, C]``, the ``[N]`` uncertainty metrics and, when both
files have it, ``passes`` ``[N, T, C]``) are compared like :func:`numpy.isclose`:
``|new - ref| <= atol + rtol * |ref|``, NaN in both counts as equal, NaN in one only differs.
``predicted_class``, ``status``, ``key`` and ``label`` are compared exactly. A dataset of the
reference that the new file lacks makes the comparison fail. Rows are matched by
:mod:`scorer.results.matching`; datasets are read one at a time and compared in row blocks (see
:func:`compare_results` for the memory this takes).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from scorer.results.matching import Matching, digests, file_digests, match_files, unmatched_paths
from scorer.results.reader import data_names, open_results, read_attrs, read_dataset, row_count

EXACT_DATASETS = ("predicted_class", "status", "key", "label")
SKIPPED_DATASETS = ("path", "reason")
"""``path`` matches rows; ``reason`` is prose (schema 1 files have none), not compared."""
PROVENANCE_ATTRS = ("model_sha256", "seed", "passes", "pass_chunk", "kind", "num_outputs",
                    "schema_version")
SHAPE_ATTRS = ("kind", "num_outputs")
"""Provenance attributes that make metrics incomparable when they differ."""


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


def compare_results(ref: Path, new: Path, atol: float = 1e-6, rtol: float = 1e-5,
                    worst: int = 5) -> Comparison:
    """Compare a new results file against a reference, matching rows by ``path``.

    Memory: files listing the same paths in the same order are read in blocks of rows, so
    memory does not grow with the rows. Otherwise the rows are matched by path digests (about
    100 bytes a row at the peak) and each dataset of the new file is read whole (strings as
    16-byte digests) while the reference is read in blocks, in its order.

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
        matching = match_files(ref_file, new_file)
        comparison = Comparison(ref, new, atol, rtol, row_count(ref_file), row_count(new_file),
                                matching.count)
        _compare_provenance(comparison, read_attrs(ref_file), read_attrs(new_file))
        comparison.only_in_ref = unmatched_paths(ref_file, matching.ref_rows)
        comparison.only_in_new = unmatched_paths(new_file, matching.new_rows)
        if comparison.incomparable:
            return comparison
        pair = FilePair(ref_file, new_file, matching)
        for name in _shared_datasets(comparison, ref_file, new_file):
            ref_probe, new_probe = pair.probe(name)
            if ref_probe.shape[1:] != new_probe.shape[1:]:
                comparison.notes.append(f"{name} not compared: shape {ref_probe.shape[1:]} "
                                        f"per row in ref, {new_probe.shape[1:]} in new")
            elif name in EXACT_DATASETS or ref_probe.dtype.kind not in "fc":
                comparison.exact.append(_compare_exact(pair, name, worst))
            else:
                comparison.metrics.append(_compare_floats(pair, name, atol, rtol, worst))
    return comparison


@dataclass(frozen=True)
class FilePair:
    """The two open files and their matching: a dataset's values in matched blocks."""

    ref: h5py.File
    new: h5py.File
    matching: Matching

    def probe(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The first row of the dataset in each file (its dtype and row shape)."""
        return read_dataset(self.ref, name, 0, 1), read_dataset(self.new, name, 0, 1)

    def value(self, file: h5py.File, name: str, row: int) -> np.ndarray:
        return read_dataset(file, name, row, row + 1)[0]

    def blocks(self, name: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """``(ref_rows, new_rows, ref_values, new_values)`` of the matched rows, in blocks in
        reference order; string values as digests unless the files are aligned."""
        matching = self.matching
        if matching.aligned:
            for start, stop, rows, _ in matching.blocks(matching.count):
                yield (rows, rows, read_dataset(self.ref, name, start, stop),
                       read_dataset(self.new, name, start, stop))
            return
        strings = read_dataset(self.new, name, 0, 1).dtype == object
        new_values = file_digests(self.new, name) if strings else read_dataset(self.new, name)
        for start, stop, ref_rows, new_rows in matching.blocks(row_count(self.ref)):
            if len(ref_rows):
                ref_values = read_dataset(self.ref, name, start, stop)[ref_rows - start]
                yield (ref_rows, new_rows, digests(ref_values) if strings else ref_values,
                       new_values[new_rows])


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


def _shared_datasets(comparison: Comparison, ref_file: h5py.File,
                     new_file: h5py.File) -> list[str]:
    """Datasets in both files (except ``path``) in schema order, noting those in one only."""
    ref_names = [n for n in data_names(ref_file) if n not in SKIPPED_DATASETS]
    new_names = {n for n in data_names(new_file) if n not in SKIPPED_DATASETS}
    comparison.missing_datasets = [n for n in ref_names if n not in new_names]
    for name in sorted(new_names - set(ref_names)):
        comparison.notes.append(f"{name} not compared: only the new file has it")
    return [name for name in ref_names if name in new_names]  # data_names: in schema order


def _compare_exact(pair: FilePair, name: str, worst: int) -> ExactDiff:
    changed_rows = 0
    first: list[tuple[int, int]] = []  # (ref row, new row) of the first changed rows
    for ref_rows, new_rows, ref_values, new_values in pair.blocks(name):
        changed = np.flatnonzero(ref_values != new_values)
        changed_rows += len(changed)
        first += list(zip(ref_rows[changed[:worst - len(first)]].tolist(),
                          new_rows[changed[:worst - len(first)]].tolist(), strict=True))
    examples = [(str(pair.value(pair.ref, "path", r)), _plain(pair.value(pair.ref, name, r)),
                 _plain(pair.value(pair.new, name, n))) for r, n in first]
    return ExactDiff(name, changed_rows, examples)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _compare_floats(pair: FilePair, name: str, atol: float, rtol: float,
                    worst: int) -> MetricDiff:
    """Tolerance comparison in row blocks; keeps the ``worst`` rows out of tolerance."""
    max_diff = 0.0
    rows_out = 0
    # (abs diff, -ref row, flat element, ref value, new value), a min-heap
    candidates: list[tuple[float, int, int, float, float]] = []
    row_shape: tuple[int, ...] = ()
    for ref_rows, _, ref_values, new_values in pair.blocks(name):
        row_shape = ref_values.shape[1:]
        ref_block = ref_values.reshape(len(ref_values), -1)
        new_block = new_values.reshape(ref_block.shape)
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
            row, element = int(bad_rows[k]), int(elements[k])
            item = (float(row_diffs[k]), -int(ref_rows[row]), element,
                    float(ref_block[row, element]), float(new_block[row, element]))
            if len(candidates) < worst:
                heapq.heappush(candidates, item)
            else:
                heapq.heappushpop(candidates, item)
    worst_rows = []
    for abs_diff, negative_row, element, ref_value, new_value in sorted(candidates, reverse=True):
        index = np.unravel_index(element, row_shape) if row_shape else ()
        worst_rows.append(WorstRow(str(pair.value(pair.ref, "path", -negative_row)),
                                   tuple(int(i) for i in index), ref_value, new_value, abs_diff))
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

