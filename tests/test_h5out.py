"""Tests for the HDF5 results writer: schema, chunking, attributes, atomic finish, resume."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.errors import OutputError
from scorer.h5out import (
    CHUNK_TARGET_BYTES,
    SCHEMA_VERSION,
    ResultRows,
    ResultWriter,
    dataset_descriptions,
    metric_names,
    partial_path,
    read_results,
)

PROBABILITY_SCALARS = ("confidence", "predictive_entropy", "expected_entropy",
                       "mutual_information", "variation_ratio")


def make_rows(start: int, count: int, *, kind: str = "probabilities", num_outputs: int = 3,
              passes: int = 4, labels: bool = False, save_passes: bool = False,
              seed: int = 0) -> ResultRows:
    """``count`` rows of made-up values for images ``start .. start+count-1`` (float64 metrics)."""
    # Values depend only on the image index, so any batch split gives the same rows.
    rngs = [np.random.default_rng([seed, start + i]) for i in range(count)]
    per_pass = np.array([rng.random((passes, num_outputs)) for rng in rngs]).reshape(
        count, passes, num_outputs)
    if kind == "probabilities":
        per_pass /= per_pass.sum(axis=2, keepdims=True)
    metrics = {"mean": per_pass.mean(axis=1), "std": per_pass.std(axis=1)}
    status = ["ok" if (start + i) % 7 else "unreadable" for i in range(count)]
    if kind == "probabilities":
        metrics["predicted_class"] = metrics["mean"].argmax(axis=1)
        for name in PROBABILITY_SCALARS:
            metrics[name] = np.array([rng.random() for rng in rngs])
    failed = np.array([s != "ok" for s in status], dtype=bool)
    for name, values in metrics.items():
        if name == "predicted_class":
            values[failed] = -1
        else:
            values[failed] = np.nan
    return ResultRows(
        path=[f"images/ünï/{start + i:05d}.png" for i in range(count)],
        key=["" if s != "ok" else f"{start + i:064x}" for i, s in enumerate(status)],
        status=status,
        label=[None if (start + i) % 5 == 0 else f"class_{(start + i) % 3}"
               for i in range(count)] if labels else None,
        metrics=metrics,
        passes=per_pass if save_passes else None,
    )


def open_writer(out: Path, mode: str = "new", *, kind: str = "probabilities",
                num_outputs: int = 3, passes: int = 4, seed: int = 0, save_passes: bool = False,
                labels: bool = False, attrs: dict | None = None, identity: tuple = (),
                flush_seconds: float = 0.0) -> ResultWriter:
    return ResultWriter.open(out, kind=kind, num_outputs=num_outputs, passes=passes, seed=seed,
                             save_passes=save_passes, has_labels=labels, attrs=attrs or {},
                             mode=mode, identity=identity, flush_seconds=flush_seconds)


def write_file(out: Path, batches: list[tuple[int, int]], **options) -> Path:
    """Write rows in the given ``(start, count)`` batches and finish."""
    row_options = {k: options[k] for k in ("kind", "num_outputs", "passes", "labels",
                                           "save_passes") if k in options}
    with open_writer(out, **options) as writer:
        for start, count in batches:
            writer.append(make_rows(start, count, **row_options))
        return writer.finish()


def concat_rows(batches: list[ResultRows]) -> dict[str, np.ndarray]:
    columns: dict[str, list] = {}
    for rows in batches:
        for name in ("path", "key", "status"):
            columns.setdefault(name, []).extend(getattr(rows, name))
        if rows.label is not None:
            columns.setdefault("label", []).extend("" if v is None else v for v in rows.label)
        for name, values in rows.metrics.items():
            columns.setdefault(name, []).append(values)
        if rows.passes is not None:
            columns.setdefault("passes", []).append(rows.passes)
    return {name: np.asarray(v, dtype=object) if name in ("path", "key", "status", "label")
            else np.concatenate(v) for name, v in columns.items()}


def assert_datasets_equal(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert sorted(left) == sorted(right)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


@pytest.mark.parametrize("kind", ["probabilities", "values"])
@pytest.mark.parametrize("labels", [False, True])
@pytest.mark.parametrize("save_passes", [False, True])
def test_round_trip(tmp_path: Path, kind: str, labels: bool, save_passes: bool) -> None:
    options = {"kind": kind, "labels": labels, "save_passes": save_passes}
    batches = [make_rows(0, 10, **options), make_rows(10, 4, **options)]
    with open_writer(tmp_path / "out.h5", seed=42, **options) as writer:
        for rows in batches:
            writer.append(rows)
        out = writer.finish()

    datasets, attrs = read_results(out)

    expected = concat_rows(batches)
    assert list(datasets) == sorted(datasets)  # h5py lists root members by name
    assert sorted(datasets) == sorted(name for name, *_ in
                                      dataset_descriptions(kind, save_passes, labels))
    for name, values in expected.items():
        if values.dtype.kind == "f":
            assert datasets[name].dtype == np.float32
            values = values.astype(np.float32)
        np.testing.assert_array_equal(datasets[name], values, err_msg=name)
    assert datasets["path"][0] == "images/ünï/00000.png"
    assert isinstance(datasets["key"][0], str)
    if kind == "probabilities":
        assert datasets["predicted_class"].dtype == np.int64
        assert datasets["predicted_class"][0] == -1  # row 0 is a failed row
    if save_passes:
        assert datasets["passes"].shape == (14, 4, 3)
    assert attrs["schema_version"] == SCHEMA_VERSION
    assert attrs["kind"] == kind
    assert attrs["num_outputs"] == 3
    assert attrs["passes"] == 4
    assert attrs["seed"] == 42
    assert attrs["save_passes"] is save_passes
    assert attrs["has_labels"] is labels
    assert attrs["rows_complete"] == 14


def test_every_dataset_has_a_description(tmp_path: Path) -> None:
    out = write_file(tmp_path / "out.h5", [(0, 3)], labels=True, save_passes=True)
    with h5py.File(out) as file:
        descriptions = {name: file[name].attrs["description"] for name in file}
    expected = dataset_descriptions("probabilities", save_passes=True, has_labels=True)
    assert descriptions == {name: description for name, _, _, description in expected}
    for name, dtype, shape, description in expected:
        assert description.startswith(shape), name
        assert description.endswith("."), name
        assert dtype in ("str", "float32", "int64")


def test_dataset_descriptions_follow_kind_and_options() -> None:
    names = [name for name, *_ in dataset_descriptions("values", False, False)]
    assert names == ["path", "key", "status", "mean", "std"]
    full = {name: shape for name, _, shape, _ in dataset_descriptions("probabilities", True, True)}
    assert full["mean"] == "[N, C]"
    assert full["passes"] == "[N, T, C]"
    assert full["predicted_class"] == "[N]"
    assert "label" in full
    assert metric_names("values") == ["mean", "std"]
    with pytest.raises(ValueError, match="probabilities"):
        dataset_descriptions("logits", False, False)


def test_chunked_compressed_and_resizable(tmp_path: Path) -> None:
    out = write_file(tmp_path / "out.h5", [(0, 5)], num_outputs=10, passes=20,
                     save_passes=True, labels=True)
    with h5py.File(out) as file:
        for name, dataset in file.items():
            assert dataset.maxshape[0] is None, name
            assert dataset.maxshape[1:] == dataset.shape[1:], name
            assert dataset.compression == "gzip", name
            assert dataset.shuffle, name
            assert dataset.chunks[1:] == dataset.shape[1:], name
            item = 16 if h5py.check_string_dtype(dataset.dtype) else dataset.dtype.itemsize
            chunk_bytes = item * int(np.prod(dataset.chunks))
            assert CHUNK_TARGET_BYTES // 2 <= chunk_bytes <= CHUNK_TARGET_BYTES, name
        assert file["mean"].chunks == (CHUNK_TARGET_BYTES // 40, 10)
        assert file["passes"].chunks == (CHUNK_TARGET_BYTES // 800, 20, 10)


def test_huge_rows_get_one_row_chunks(tmp_path: Path) -> None:
    open_writer(tmp_path / "out.h5", num_outputs=1000, passes=300, save_passes=True).close()
    with h5py.File(tmp_path / "out.h5.partial") as file:
        assert file["passes"].chunks == (1, 300, 1000)
        assert file["mean"].chunks == (CHUNK_TARGET_BYTES // 4000, 1000)


def test_many_small_batches_keep_the_chunk_layout(tmp_path: Path) -> None:
    sizes = [1, 2, 3] * 10
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    batches = list(zip(starts.tolist(), sizes, strict=True))
    many = write_file(tmp_path / "many.h5", batches, save_passes=True)
    single = write_file(tmp_path / "single.h5", [(0, 0)], save_passes=True)
    with h5py.File(many) as small, h5py.File(single) as empty:
        for name in small:
            assert small[name].chunks == empty[name].chunks, name
            assert small[name].shape[0] == sum(sizes)
            assert small[name].compression == "gzip"
    # One flush per batch must not leave the file full of stale chunk copies.
    assert os.path.getsize(many) < 2 * os.path.getsize(
        write_file(tmp_path / "one_go.h5", [(0, sum(sizes))], save_passes=True)) + 200_000


def test_attributes_round_trip_including_json(tmp_path: Path) -> None:
    attrs = {"model_sha256": "ab" * 32, "batch_size": 32, "threshold": 0.25, "gpu": False,
             "class_names": ["cat", "dog", "ünicorn"], "preprocessing": {"size": [224, 224]},
             "started": "2024-01-01T00:00:00Z"}
    with open_writer(tmp_path / "out.h5", attrs=attrs) as writer:
        writer.append(make_rows(0, 2))
        writer.set_attrs({"providers": ["CUDAExecutionProvider"], "batch_size": 64})
        out = writer.finish({"finished": "2024-01-01T01:00:00Z", "class_names": "none"})

    _, stored = read_results(out)

    assert stored["model_sha256"] == "ab" * 32
    assert stored["batch_size"] == 64
    assert stored["threshold"] == 0.25
    assert stored["gpu"] is False
    assert stored["preprocessing"] == {"size": [224, 224]}
    assert stored["providers"] == ["CUDAExecutionProvider"]
    assert stored["class_names"] == "none"  # replaced by a plain string: no longer JSON
    assert stored["finished"] == "2024-01-01T01:00:00Z"
    assert "json_attrs" not in stored


def test_reserved_and_unstorable_attributes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        open_writer(tmp_path / "a.h5", attrs={"seed": 3})
    with open_writer(tmp_path / "b.h5") as writer, pytest.raises(TypeError, match="when"):
        writer.set_attrs({"when": object()})


def test_only_the_partial_exists_until_finish(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    writer = open_writer(out)
    writer.append(make_rows(0, 3))
    assert partial_path(out) == tmp_path / "out.h5.partial"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5.partial"]

    assert writer.finish() == out

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
    assert read_results(out)[1]["rows_complete"] == 3


def test_close_keeps_the_partial(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    writer = open_writer(out, flush_seconds=3600)
    writer.append(make_rows(0, 3))
    assert writer.rows_done == 3
    writer.close()
    writer.close()  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5.partial"]
    with h5py.File(partial_path(out)) as file:
        assert file.attrs["rows_complete"] == 3  # buffered rows written on close
        assert file["path"].shape == (3,)


def test_exception_in_context_closes_without_finishing(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    with pytest.raises(KeyboardInterrupt), open_writer(out) as writer:
        writer.append(make_rows(0, 3))
        raise KeyboardInterrupt
    assert not out.exists()
    assert partial_path(out).exists()


def test_new_refuses_an_existing_output(tmp_path: Path) -> None:
    out = write_file(tmp_path / "out.h5", [(0, 2)])
    with pytest.raises(OutputError, match="already exists.*--overwrite.*--resume"):
        open_writer(out)
    assert not partial_path(out).exists()


def test_new_refuses_an_interrupted_partial(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    open_writer(out).close()
    with pytest.raises(OutputError, match="interrupted.*--resume.*--overwrite"):
        open_writer(out)


def test_overwrite_replaces_output_only_on_finish(tmp_path: Path) -> None:
    out = write_file(tmp_path / "out.h5", [(0, 2)])
    open_writer(out, "overwrite").close()  # leaves a stale partial behind
    writer = open_writer(out, "overwrite", seed=9)
    assert writer.rows_done == 0
    writer.append(make_rows(0, 5))
    assert read_results(out)[1]["seed"] == 0  # the old output is untouched meanwhile
    writer.finish()
    datasets, attrs = read_results(out)
    assert attrs["seed"] == 9
    assert len(datasets["path"]) == 5


def test_resume_of_a_complete_output_is_refused(tmp_path: Path) -> None:
    out = write_file(tmp_path / "out.h5", [(0, 2)])
    with pytest.raises(OutputError, match="already complete; use --overwrite"):
        open_writer(out, "resume")


def test_resume_without_anything_starts_new(tmp_path: Path) -> None:
    with open_writer(tmp_path / "out.h5", "resume") as writer:
        assert writer.rows_done == 0
        assert writer.done_paths() == []


@pytest.mark.parametrize("save_passes", [False, True])
def test_resume_after_close_equals_one_go(tmp_path: Path, save_passes: bool) -> None:
    options = {"labels": True, "save_passes": save_passes}
    attrs = {"model_sha256": "f00d"}
    one_go = write_file(tmp_path / "one.h5", [(0, 12)], attrs=attrs, **options)
    out = tmp_path / "two.h5"
    first = open_writer(out, attrs=attrs, identity=("model_sha256",), **options)
    first.append(make_rows(0, 5, **options))
    first.close()

    second = open_writer(out, "resume", attrs=attrs, identity=("model_sha256",), **options)
    assert second.rows_done == 5
    assert second.done_paths() == [f"images/ünï/{i:05d}.png" for i in range(5)]
    second.append(make_rows(5, 7, **options))
    second.finish()

    assert_datasets_equal(read_results(out)[0], read_results(one_go)[0])


def test_resume_drops_rows_after_rows_complete(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    writer = open_writer(out)
    writer.append(make_rows(0, 4))
    writer.close()
    with h5py.File(partial_path(out), "r+") as file:  # a half-written append of 3 rows
        for name in ("path", "key", "mean", "confidence"):
            file[name].resize(7, axis=0)
            file[name][4:] = file[name][:3]

    writer = open_writer(out, "resume")
    assert writer.rows_done == 4
    writer.close()
    with h5py.File(partial_path(out)) as file:
        assert {file[name].shape[0] for name in file} == {4}
    writer = open_writer(out, "resume")
    writer.append(make_rows(4, 2))
    writer.finish()

    datasets, _ = read_results(out)
    assert_datasets_equal(datasets, read_results(write_file(tmp_path / "ref.h5", [(0, 6)]))[0])


def test_resume_of_a_killed_process_keeps_flushed_rows(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_h5out import make_rows, open_writer
writer = open_writer({str(out)!r})
for start in range(0, 9, 3):
    writer.append(make_rows(start, 3))
os._exit(1)  # no close, no atexit: like SIGKILL
"""
    root = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, check=False)
    assert result.returncode == 1
    with open_writer(out, "resume") as writer:
        assert writer.rows_done == 9
        writer.append(make_rows(9, 1))
        writer.finish()
    assert len(read_results(out)[0]["path"]) == 10


def test_resume_with_different_settings_lists_the_differences(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    open_writer(out, seed=1, attrs={"model_sha256": "aaa"}).close()
    with pytest.raises(OutputError) as error:
        open_writer(out, "resume", seed=2, passes=8, attrs={"model_sha256": "bbb"},
                    identity=("model_sha256",))
    message = str(error.value)
    assert "seed: 1 (partial) vs 2 (now)" in message
    assert "passes: 4 (partial) vs 8 (now)" in message
    assert "model_sha256: 'aaa' (partial) vs 'bbb' (now)" in message
    assert "num_outputs" not in message
    assert "--overwrite" in message
    # The same settings resume fine.
    open_writer(out, "resume", seed=1, attrs={"model_sha256": "aaa"},
                identity=("model_sha256",)).close()


def test_unwritable_directory(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file.txt"
    not_a_directory.write_text("x")
    with pytest.raises(OutputError, match=r"file\.txt/out\.h5\.partial.*Not a directory"):
        open_writer(not_a_directory / "out.h5")
    with pytest.raises(OutputError, match="No such file or directory"):
        open_writer(tmp_path / "missing" / "out.h5")


def test_append_checks_columns(tmp_path: Path) -> None:
    with open_writer(tmp_path / "out.h5") as writer:
        rows = make_rows(0, 3)
        del rows.metrics["confidence"]
        with pytest.raises(ValueError, match="confidence"):
            writer.append(rows)
        rows = make_rows(0, 3)
        rows.metrics["mean"] = rows.metrics["mean"][:, :2]
        with pytest.raises(ValueError, match=r"mean has shape \(3, 2\), expected \(3, 3\)"):
            writer.append(rows)
        rows = make_rows(0, 3)
        rows.key = rows.key[:2]
        with pytest.raises(ValueError, match="key has 2 rows"):
            writer.append(rows)
        with pytest.raises(ValueError, match="passes"):
            writer.append(make_rows(0, 3, save_passes=True))
        assert writer.rows_done == 0


def test_read_results_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        read_results(tmp_path / "nope.h5")
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(OutputError, match="not a readable HDF5 file"):
        read_results(text)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as file:
        file["x"] = [1, 2]
    with pytest.raises(OutputError, match="not an mcd-score results file.*schema_version"):
        read_results(plain)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=8),
       st.floats(min_value=0.0, max_value=1.0))
def test_batch_split_does_not_change_the_file(sizes: list[int], flush_seconds: float) -> None:
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    with tempfile.TemporaryDirectory() as directory:
        split = write_file(Path(directory) / "split.h5", list(zip(starts, sizes, strict=True)),
                           flush_seconds=flush_seconds)
        whole = concat_rows([make_rows(s, n) for s, n in zip(starts, sizes, strict=True)])
        datasets, attrs = read_results(split)
    assert attrs["rows_complete"] == sum(sizes)
    for name, values in whole.items():
        expected = values.astype(np.float32) if values.dtype.kind == "f" else values
        np.testing.assert_array_equal(datasets[name], expected, err_msg=name)
