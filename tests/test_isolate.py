"""Tests for scorer.isolate: the results file's writer runs in a child process, started ahead."""

from __future__ import annotations

import pytest

from scorer import isolate
from scorer.isolate import ChildFailed, prestart, run_module


def test_a_prestarted_child_is_the_one_that_runs_and_is_started_once():
    prestart("json.tool")
    child = isolate._waiting["json.tool"]
    prestart("json.tool")  # already waiting: not started twice
    assert isolate._waiting["json.tool"] is child and child.poll() is None
    run_module("json.tool", {"a": 1})
    assert child.returncode == 0 and "json.tool" not in isolate._waiting


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
