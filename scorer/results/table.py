"""``mcd-score table``: the results as one table, filtered, sorted, as CSV or Parquet.

The file is read in chunks of rows (:func:`scorer.results.reader.read_results`); each chunk is filtered,
and with ``--top`` only the best rows of each chunk are kept, so memory is bounded by the chunk
size plus the rows kept.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


def select(path: Path, query: TableQuery, chunk_rows: int = 65536):
    """The rows and columns of ``path`` that ``query`` asks for, as a pandas DataFrame."""
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
    kept = []
    for frame in read_results(path, columns=needed, chunk_rows=chunk_rows):
        for column, symbol, text in conditions:
            frame = frame[OPERATORS[symbol](frame[column], _typed(frame[column], text))]
        if query.sort and query.top:
            frame = _ordered(frame, query).head(query.top)
        kept.append(frame)
    import pandas

    table = pandas.concat(kept, ignore_index=True)
    if query.sort:
        table = _ordered(table, query)
    if query.top:
        table = table.head(query.top)
    return table[shown].reset_index(drop=True)


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
                parquet: Path | None = None, stdout: BinaryIO | None = None) -> int:
    """Write the selected table as CSV (``"-"``: ``stdout``) and/or Parquet; return its rows.

    Raises:
        ScorerUsageError: A bad query, or Parquet without pyarrow.
    """
    table = select(path, query)
    if csv == "-":
        text = table.to_csv(index=False)
        if stdout is None:
            print(text, end="")
        else:
            stdout.write(text.encode("utf-8", "surrogateescape"))
            stdout.flush()
    elif csv is not None:
        table.to_csv(csv, index=False)
    if parquet is not None:
        try:
            table.to_parquet(parquet, index=False)
        except ImportError as error:
            raise ScorerUsageError("--parquet needs pyarrow: pip install 'mcd-score[table]'") from error
    return len(table)
