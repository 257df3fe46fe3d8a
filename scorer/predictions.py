"""Results in memory: what :func:`scorer.predict` returns, read like a results file.

:class:`Predictions` holds the datasets of a results file as numpy arrays, by the same names, with
the same shapes, dtypes and meanings (``mean`` ``[N, C]``, ``mutual_information`` ``[N]``, ...),
and the file's header (kind, classes, passes, seed, provenance). It turns into the table that
:func:`scorer.read_results` gives (:meth:`~Predictions.to_pandas`), into the Dataset that
xarray opens from the file (:meth:`~Predictions.to_xarray`), and into a results file that
``compare``, ``table`` and ``report`` read (:meth:`~Predictions.save`, written as a scoring run
writes its file: rows committed first, the file by a separate process, renamed into place).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scorer.atomic import fsync_path
from scorer.errors import OutputError, ScorerUsageError
from scorer.results import schema
from scorer.results.reader import table_frame, table_map
from scorer.results.schema import IMAGE_DIM, PASS_DIM, FileHeader
from scorer.rundir import merge, segments
from scorer.rundir.child import run_module
from scorer.rundir.folder import check_output_path


@dataclass
class Predictions(Mapping[str, np.ndarray]):
    """Every dataset of the results, by name (``predictions["mean"]``), and the file's header.

    Attributes:
        header: Kind, number of outputs, passes, seed, class names and provenance attributes, as
            the results file would record them.
        datasets: The datasets: metrics in their schema dtypes, strings (``path``, ``key``,
            ``status``, ``reason``, ``label``) as ``str`` object arrays, ``passes`` ``[N, T, C]``
            when they were kept.
    """

    header: FileHeader
    datasets: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(f"no dataset {name!r}; these predictions have: "
                           f"{', '.join(self.datasets)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)

    def __repr__(self) -> str:
        return (f"Predictions({self.rows} images, {self.kind}, {self.header.num_outputs} outputs, "
                f"T={self.header.passes}, datasets: {', '.join(self.datasets)})")

    @property
    def rows(self) -> int:
        """``N``, the number of images."""
        return len(self.datasets["path"])

    @property
    def kind(self) -> str:
        return self.header.kind

    @property
    def class_names(self) -> list[str]:
        """The names along the class (or output) dimension, as the file's coordinate."""
        return self.header.names()

    @property
    def attrs(self) -> Mapping[str, Any]:
        """The provenance the file's root attributes would hold (model, versions, options)."""
        return {**self.header.root_attrs(), **self.header.attrs}

    def to_pandas(self, columns: Sequence[str] | None = None):
        """One row per image, one column per scalar and per class: :func:`scorer.read_results`'s
        table of the saved file."""
        from scorer.results.reader import _pandas

        mapping = table_map(list(self.datasets), self.class_names)
        wanted = list(mapping if columns is None else columns)
        unknown = [c for c in wanted if c not in mapping]
        if unknown:
            raise ScorerUsageError(f"no columns {unknown}; there are: {', '.join(mapping)}")
        return table_frame(_pandas(), self.datasets.__getitem__, mapping, wanted,
                           self.class_names)

    def to_xarray(self):
        """An :class:`xarray.Dataset` with the dimensions of the results file (``image``,
        ``class`` or ``output``, ``pass``): what ``xarray.open_dataset`` gives for the file."""
        try:
            import xarray
        except ImportError as error:
            raise ScorerUsageError("to_xarray needs xarray: pip install 'mcd-score[xarray]'") \
                from error
        kind = self.kind
        coords = {IMAGE_DIM: np.arange(self.rows, dtype=np.int64),
                  schema.class_dim(kind): np.array(self.class_names, dtype=object)}
        if "passes" in self.datasets:
            coords[PASS_DIM] = np.arange(self.header.passes, dtype=np.int64)
        data = {name: (schema.spec(name).dims_for(kind), values, {"description":
                                                                   schema.spec(name).description})
                for name, values in self.datasets.items()}
        return xarray.Dataset(data, coords=coords, attrs=dict(self.attrs))

    def save(self, path: Path, overwrite: bool = False) -> Path:
        """Write the results file ``path``, crash-safe as a scoring run writes one.

        Raises:
            OutputError: ``path`` exists (and not ``overwrite``) or cannot hold a results file.
            OutputWriteError: The disk is full or the file could not be written.
        """
        path = Path(path)
        check_output_path(path)
        if path.exists() and not overwrite:
            raise OutputError(f"{path} already exists; pass overwrite=True to replace it")
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            columns = {name: values.tolist() if values.dtype == object else values
                       for name, values in self.datasets.items()}
            segment = segments.write_segment(folder, 0, columns)
            temporary = folder / "final.h5"
            run_module(merge.MODULE, {"path": str(temporary), "header": asdict(self.header),
                                      "mode": "segments",
                                      "segments": [(segment.start, segment.stop,
                                                    str(segment.path))]})
            fsync_path(temporary)
            temporary.replace(path)
            fsync_path(path.parent, directory=True)
        except OSError as error:
            raise segments.write_error(path, error) from error
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return path


def concatenate(header: FileHeader, parts: Sequence[Mapping[str, Any]]) -> Predictions:
    """Predictions from the row columns of consecutive batches (:func:`scorer.engine.score_batch`
    gives them: strings as lists, numbers as arrays)."""
    names = [spec.name for spec in schema.dataset_specs(header.kind, header.save_passes,
                                                        header.has_labels)]
    datasets = {}
    for name in names:
        spec = schema.spec(name)
        values = [part[name] for part in parts]
        if spec.dtype == schema.STRING:
            datasets[name] = np.array([v for chunk in values for v in chunk] or [], dtype=object)
        elif values:
            datasets[name] = np.concatenate([np.asarray(v, dtype=spec.dtype) for v in values])
        else:
            shape = spec.row_shape(header.num_outputs, header.passes)
            datasets[name] = np.zeros((0, *shape), dtype=spec.dtype)
    return Predictions(header, datasets)
