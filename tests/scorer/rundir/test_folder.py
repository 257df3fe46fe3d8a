"""scorer.rundir.folder: the locked OUT.parts/ folder of a run in progress, its modes and its finish."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from scorer.errors import OutputError, OutputWriteError
from scorer.results.reader import read_arrays
from scorer.results.schema import FileHeader
from scorer.rundir import folder as rundir
from scorer.rundir.folder import RunDir, check_output_path, parts_path

HEADER = FileHeader("values", 2, 3, 0, False, False, attrs={"command": "test"})
IDENTITY = {"model_sha256": "abc", "seed": 0, "passes": 3, "inputs_sha256": "f00"}


def rows(start: int, count: int) -> dict[str, object]:
    index = np.arange(start, start + count, dtype=np.float32)
    return {"path": [f"{i}.png" for i in range(start, start + count)],
            "key": ["k"] * count, "status": ["ok"] * count, "reason": [""] * count,
            "label": [""] * count, "mean": np.stack([index, -index], 1),
            "std": np.zeros((count, 2), np.float32)}


def start_run(out: Path, mode: str = "new", count: int = 4, identity=IDENTITY) -> RunDir:
    run = RunDir.open(out, HEADER, identity, mode)
    writer = run.writer()
    writer.append(rows(writer.rows_done, count), count)
    writer.flush()
    return run


def test_a_new_run_is_kept_in_parts_until_finish(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    run = start_run(out)
    assert sorted(p.name for p in parts_path(out).iterdir()) == ["job.json", "lock", "shard-00000"]
    assert not out.exists()
    run.finish({"end_time": "now"})
    assert not parts_path(out).exists()
    data, attrs = read_arrays(out)
    assert list(data["path"]) == ["0.png", "1.png", "2.png", "3.png"]
    np.testing.assert_array_equal(data["mean"][:, 1], [0, -1, -2, -3])
    assert attrs["command"] == "test" and attrs["end_time"] == "now"


def test_new_refuses_an_existing_output_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    out.write_bytes(b"previous results")
    with pytest.raises(OutputError, match="already exists; use --overwrite.*or --resume"):
        RunDir.open(out, HEADER, IDENTITY, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_new_refuses_an_interrupted_run(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    start_run(out).close()
    with pytest.raises(OutputError, match="interrupted run.*--resume"):
        RunDir.open(out, HEADER, IDENTITY, "new")
    assert len(RunDir.open(out, HEADER, IDENTITY, "resume").committed()) == 1


@pytest.mark.parametrize("mode", ["new", "overwrite", "resume"])
def test_a_running_job_is_never_touched_by_a_second_one(tmp_path: Path, mode: str) -> None:
    """A second run in any mode, --overwrite included, takes the lock before it touches anything:
    it is refused, and the running job's files stay byte for byte as they were."""
    out = tmp_path / "out.h5"
    first = start_run(out)
    before = {p: p.read_bytes() for p in parts_path(out).rglob("*") if p.is_file() and p.name != "lock"}
    with pytest.raises(OutputError) as caught:
        RunDir.open(out, HEADER, IDENTITY, mode)
    message = str(caught.value)
    assert "another mcd-score run" in message and f"pid {os.getpid()}" in message
    assert "--overwrite" not in message
    after = {p: p.read_bytes() for p in parts_path(out).rglob("*") if p.is_file() and p.name != "lock"}
    assert after == before
    first.finish({})
    assert read_arrays(out)[0]["path"].shape == (4,)


def test_overwrite_starts_afresh_and_replaces_the_output_only_on_finish(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    start_run(out, count=4).finish({})
    old = out.read_bytes()
    run = start_run(out, "overwrite", count=2)
    assert out.read_bytes() == old  # readers of OUT see the old complete file meanwhile
    run.finish({})
    assert list(read_arrays(out)[0]["path"]) == ["0.png", "1.png"]


def test_resume_continues_after_the_committed_rows(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    start_run(out, count=3).close()
    run = start_run(out, "resume", count=2)
    run.finish({})
    assert list(read_arrays(out)[0]["path"]) == [f"{i}.png" for i in range(5)]


def test_resume_with_other_settings_lists_every_difference(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    start_run(out).close()
    with pytest.raises(OutputError) as caught:
        RunDir.open(out, HEADER, {**IDENTITY, "seed": 1, "inputs_sha256": "bad"}, "resume")
    message = str(caught.value)
    assert "seed: 0 (interrupted run) vs 1 (now)" in message
    assert "inputs_sha256: 'f00' (interrupted run) vs 'bad' (now)" in message


def test_resume_of_a_complete_output_is_refused_and_of_nothing_starts_new(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    start_run(out).finish({})
    with pytest.raises(OutputError, match="already complete"):
        RunDir.open(out, HEADER, IDENTITY, "resume")
    fresh = tmp_path / "fresh.h5"
    with RunDir.open(fresh, HEADER, IDENTITY, "resume") as run:
        assert run.committed() == []


def test_a_failed_finish_keeps_every_committed_row(tmp_path: Path, monkeypatch) -> None:
    """A failed final write (here: a full disk) is one OutputWriteError, leaves no output and no
    half-written temporary, and keeps every committed row for --resume."""
    out = tmp_path / "out.h5"
    run = start_run(out, count=3)

    def full(module, payload) -> None:
        Path(payload["path"]).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "run_module", full)
    with pytest.raises(OutputWriteError, match=f"cannot write {out}: No space left on device"):
        run.finish({})
    run.close()
    assert not out.exists() and not (parts_path(out) / "final.h5.tmp").exists()
    monkeypatch.undo()
    resumed = RunDir.open(out, HEADER, IDENTITY, "resume")
    assert [(s.start, s.stop) for s in resumed.committed()] == [(0, 3)]
    resumed.finish({})
    assert read_arrays(out)[0]["path"].shape == (3,)


@pytest.mark.parametrize("case", ["empty", "folder", "device", "no-parent", "dot"])
def test_unusable_output_paths_are_refused_before_anything_is_written(tmp_path: Path, case: str,
                                                                      monkeypatch) -> None:
    """An empty, ``.``, folder, device or parentless output path is refused with a reason before
    anything is written, by --overwrite too: a device node is never replaced."""
    monkeypatch.chdir(tmp_path)
    out = {"empty": Path(""), "folder": tmp_path, "device": Path("/dev/null"),
           "no-parent": tmp_path / "missing" / "out.h5", "dot": Path(".")}[case]
    expected = {"empty": "not a file name", "folder": "is a folder", "device": "not a regular file",
                "no-parent": "does not exist", "dot": "not a file name"}[case]
    with pytest.raises(OutputError, match=expected):
        check_output_path(out)
    with pytest.raises(OutputError, match=expected):
        RunDir.open(out, HEADER, IDENTITY, "overwrite")
    assert Path("/dev/null").is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
