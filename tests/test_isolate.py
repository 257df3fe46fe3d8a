"""Tests for scorer.isolate: the results file's writer runs in a child process, started ahead."""

from __future__ import annotations

import pytest

from scorer import isolate
from scorer.isolate import ChildFailed, prestart, run_module


def test_a_prestarted_child_is_the_one_that_runs():
    prestart("json.tool")
    child = isolate._waiting["json.tool"]
    assert child.poll() is None
    run_module("json.tool", {"a": 1})
    assert child.returncode == 0 and "json.tool" not in isolate._waiting


def test_a_child_left_waiting_is_replaced_by_the_next_prestart(tmp_path, monkeypatch):
    """The new run's umask (and directory, environment) must hold in its child, not the old's."""
    import os

    prestart("json.tool")
    stale = isolate._waiting["json.tool"]
    monkeypatch.chdir(tmp_path)
    prestart("json.tool")
    assert stale.returncode is not None and isolate._waiting["json.tool"] is not stale
    assert os.readlink(f"/proc/{isolate._waiting['json.tool'].pid}/cwd") == str(tmp_path)
    run_module("json.tool", {})


def test_without_prestart_a_child_is_started_on_demand():
    assert "json.tool" not in isolate._waiting
    run_module("json.tool", [1, 2])


def test_the_child_s_last_error_line_is_the_reason(tmp_path):
    prestart("scorer.merge")
    with pytest.raises(ChildFailed, match="KeyError: 'header'"):
        run_module("scorer.merge", {"path": str(tmp_path / "x.h5")})


def test_a_dead_prestarted_child_is_replaced():
    prestart("json.tool")
    isolate._waiting["json.tool"].kill()
    isolate._waiting["json.tool"].wait()
    run_module("json.tool", {"b": 2})


def test_children_left_waiting_are_reaped_at_exit():
    prestart("json.tool")
    child = isolate._waiting["json.tool"]
    isolate._stop_waiting()
    assert child.returncode is not None and not isolate._waiting
