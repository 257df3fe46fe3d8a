"""``mcd-score table``: the results as one table, filtered, sorted, as CSV or Parquet.

The file is read in chunks of rows (:func:`scorer.results.reader.read_results`) and each chunk is
filtered. Memory: without ``--sort`` the chunks are written out as they come (CSV or Parquet), so
memory does not grow with the rows; with ``--sort`` and ``--top`` only the best rows so far are kept;
``--sort`` without ``--top`` holds every selected row of the columns asked for.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from scorer.atomic import atomic_file
from scorer.errors import ScorerUsageError
from scorer.results.reader import open_results, read_results, table_columns

OPERATORS = {"=": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge,
             "<": operator.lt, ">": operator.gt}
_CONDITION = re.compile(r"^\s*([^!<>=\s]+)\s*(!=|<=|>=|=|<|>)\s*(.*?)\s*$")


@dataclass(frozen=True)
class TableQuery:
    """Which rows and columns: ``where`` conditions (``COL=VALUE``, ``!=``, ``<``, ``<=``, ``>``,
    ``>=``, all must hold), ``sort`` column (largest first unless ``ascending``), ``top`` rows,
    and ``columns`` to keep (all by default)."""

    where: Sequence[str] = ()
    sort: str | None = None
    ascending: bool = False
    top: int | None = None
    columns: Sequence[str] | None = None


def parse_condition(text: str) -> tuple[str, str, str]:
    """``"status=ok"`` -> ``("status", "=", "ok")``; ScorerUsageError if it is not one."""
    match = _CONDITION.match(text)
    if not match:
        raise ScorerUsageError(f"--where {text!r} is not COLUMN=VALUE (or !=, <, <=, >, >=), "
                               "e.g. --where status=ok or --where mutual_information>0.5")
    return match[1], match[2], match[3]


CHUNK_ROWS = 65536


def select(path: Path, query: TableQuery, chunk_rows: int = CHUNK_ROWS):
    """The rows and columns of ``path`` that ``query`` asks for, as a pandas DataFrame."""
    import pandas

    frames = list(iter_select(path, query, chunk_rows))
    return pandas.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def iter_select(path: Path, query: TableQuery, chunk_rows: int = CHUNK_ROWS):
    """:func:`select` as DataFrames of consecutive selected rows: without ``sort``, the
    non-empty ones of each chunk of the file, else one sorted frame; one empty frame when no
    row is selected.

    The query is checked, and the first frame read, before this returns: a bad query raises here,
    not at the first frame.
    """
    if query.top is not None and query.top < 1:
        raise ScorerUsageError(f"--top must be at least 1, got {query.top}")
    with open_results(path) as file:
        available = table_columns(file)
    conditions = [parse_condition(text) for text in query.where]
    shown = list(query.columns or available)
    needed = list(dict.fromkeys([*shown, *(c for c, _, _ in conditions),
                                 *([query.sort] if query.sort else [])]))
    unknown = [c for c in needed if c not in available]
    if unknown:
        raise ScorerUsageError(f"{path} has no column {', '.join(map(repr, unknown))}; its columns "
                               f"are: {', '.join(available)}")
    frames = _selected(path, query, conditions, shown, needed, chunk_rows)
    return itertools.chain([next(frames)], frames)


def _selected(path: Path, query: TableQuery, conditions: list[tuple[str, str, str]],
              shown: list[str], needed: list[str], chunk_rows: int):
    import pandas

    kept, rows_out, empty = [], 0, None
    for frame in read_results(path, columns=needed, chunk_rows=chunk_rows):
        for column, symbol, text in conditions:
            frame = frame[OPERATORS[symbol](frame[column], _typed(frame[column], text))]
        if not query.sort:
            if query.top is not None:
                frame = frame.head(query.top - rows_out)
            if len(frame):  # empty frames are not yielded: their text columns have no type
                rows_out += len(frame)
                yield frame[shown].reset_index(drop=True)
            elif empty is None:
                empty = frame[shown].reset_index(drop=True)
            if query.top is not None and rows_out >= query.top:
                return
            continue
        if query.top:  # keep the best rows so far (the sort is stable: earlier rows win ties)
            frame = _ordered(pandas.concat([*kept, frame], ignore_index=True), query)
            kept = [frame.head(query.top)]
        else:
            kept.append(frame)
    if query.sort:
        table = _ordered(pandas.concat(kept, ignore_index=True), query)
        if query.top is not None:
            table = table.head(query.top)
        yield table[shown].reset_index(drop=True)
    elif rows_out == 0:
        yield empty


def _ordered(frame, query: TableQuery):
    return frame.sort_values(query.sort, ascending=query.ascending, kind="stable",
                             na_position="last")


def _typed(series, text: str):
    if series.dtype.kind in "iuf":
        try:
            return float(text)
        except ValueError:
            raise ScorerUsageError(f"--where {series.name}: {text!r} is not a number") from None
    return text


def write_table(path: Path, query: TableQuery, csv: str | Path | None = "-",
                parquet: Path | None = None, stdout: BinaryIO | None = None,
                chunk_rows: int = CHUNK_ROWS) -> int:
    """Write the selected table as CSV (``"-"``: ``stdout``) and/or Parquet; return its rows.

    Raises:
        ScorerUsageError: A bad query, or Parquet without pyarrow.
    """
    if parquet is not None:
        try:
            import pyarrow.parquet
        except ImportError as error:
            raise ScorerUsageError("--parquet needs pyarrow: pip install 'mcd-score[table]'") from error
    frames = iter_select(path, query, chunk_rows)  # a bad query fails before any file is touched
    rows = 0
    with contextlib.ExitStack() as stack:  # files written whole or not at all (atomic_file)
        csv_file = None
        if csv not in (None, "-"):
            csv_file = stack.enter_context(open(stack.enter_context(atomic_file(Path(csv))), "w",
                                                encoding="utf-8", newline=""))
        parquet_path = stack.enter_context(atomic_file(Path(parquet))) if parquet else None
        parquet_writer = None
        for index, frame in enumerate(frames):
            first = index == 0
            rows += len(frame)
            if csv == "-":
                text = frame.to_csv(index=False, header=first)
                if stdout is None:
                    print(text, end="")
                else:
                    stdout.write(text.encode("utf-8", "surrogateescape"))
                    stdout.flush()
            elif csv_file is not None:
                frame.to_csv(csv_file, index=False, header=first)
            if parquet_path is not None:
                import pyarrow

                batch = pyarrow.Table.from_pandas(frame, preserve_index=False,
                                                  schema=None if first else parquet_writer.schema)
                if first:
                    parquet_writer = stack.enter_context(
                        pyarrow.parquet.ParquetWriter(parquet_path, batch.schema))
                parquet_writer.write_table(batch)
    return rows
