"""scorer.rundir.child: the results file's writer runs in a child process, started ahead."""

from __future__ import annotations

import os
from dataclasses import asdict

import h5py
import pytest

from scorer.results.schema import FileHeader
from scorer.rundir import child
from scorer.rundir.child import ChildFailed, prestart, run_module
from scorer.rundir.merge import MODULE as MERGE


def empty_results(path) -> dict:
    """A merge payload that writes a results file of no rows to ``path``."""
    return {"path": str(path), "header": asdict(FileHeader("values", 1, 2, 0, False, False)),
            "mode": "segments", "segments": []}


def wrote_results(path) -> bool:
    with h5py.File(path, "r") as file:
        return int(file.attrs["schema_version"]) == 2 and file["path"].shape == (0,)


def test_a_prestarted_child_is_the_one_that_runs(tmp_path):
    prestart(MERGE)
    waiting = child._waiting[MERGE]
    assert waiting.poll() is None
    run_module(MERGE, empty_results(tmp_path / "a.h5"))
    assert waiting.returncode == 0 and MERGE not in child._waiting
    assert wrote_results(tmp_path / "a.h5")


def test_a_child_left_waiting_is_replaced_by_the_next_prestart(tmp_path, monkeypatch):
    """The new run's umask (and directory, environment) must hold in its child, not the old's."""
    prestart(MERGE)
    stale = child._waiting[MERGE]
    monkeypatch.chdir(tmp_path)
    prestart(MERGE)
    assert stale.returncode is not None and child._waiting[MERGE] is not stale
    assert os.readlink(f"/proc/{child._waiting[MERGE].pid}/cwd") == str(tmp_path)
    run_module(MERGE, empty_results("relative.h5"))  # written in the new child's folder
    assert wrote_results(tmp_path / "relative.h5")


def test_without_prestart_a_child_is_started_on_demand(tmp_path):
    assert MERGE not in child._waiting
    run_module(MERGE, empty_results(tmp_path / "b.h5"))
    assert wrote_results(tmp_path / "b.h5")


def test_the_child_s_last_error_line_is_the_reason(tmp_path):
    prestart(MERGE)
    with pytest.raises(ChildFailed, match="KeyError: 'header'"):
        run_module(MERGE, {"path": str(tmp_path / "x.h5")})
    assert not (tmp_path / "x.h5").exists()


def test_a_dead_prestarted_child_is_replaced(tmp_path):
    prestart(MERGE)
    dead = child._waiting[MERGE]
    dead.kill()
    dead.wait()
    run_module(MERGE, empty_results(tmp_path / "c.h5"))
    assert wrote_results(tmp_path / "c.h5")


def test_children_left_waiting_are_reaped_at_exit():
    prestart(MERGE)
    waiting = child._waiting[MERGE]
    child._stop_waiting()
    assert waiting.returncode is not None and not child._waiting


def test_the_child_runs_this_checkout_s_scorer():
    """``PYTHONPATH`` of a child starts with the folder holding this scorer package."""
    import scorer

    environment = child.child_env()
    first = environment["PYTHONPATH"].split(os.pathsep)[0]
    assert os.path.join(first, "scorer", "__init__.py") == scorer.__file__
