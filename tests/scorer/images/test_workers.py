"""Tests for scorer.images.workers: decoding in worker processes gives the thread path's results, and
the workers never outlive the run (normal end, break, errors, a dead worker, SIGTERM, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from images_support import PRE, SETTINGS, flatten, make_files, many, run_with_timeout
from paths import ROOT

from scorer.contract import Preprocessing
from scorer.images.batches import iter_batches
from scorer.images.load import DecodeSettings
from scorer.images.workers import DecodeWorkerError, ProcessPool


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path / "images")


def workers_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid`` and that run scorer.images.workers."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, parent = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(parent) == pid and state != "Z" and b"scorer.images.workers" in command:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone(pids: list[int], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_processes_give_the_same_batches_as_threads(files, batch_size, layout):
    refs, failures = files
    settings = DecodeSettings(PRE, layout)

    threads = list(iter_batches(refs, settings, batch_size, workers=2))
    processes = list(iter_batches(refs, settings, batch_size, workers=3, processes=True))

    assert [len(b) for b in processes] == [len(b) for b in threads]
    for ours, theirs in zip(processes, threads, strict=True):
        assert (ours.refs, ours.keys, ours.status, ours.reasons) == \
            (theirs.refs, theirs.keys, theirs.status, theirs.reasons)
        np.testing.assert_array_equal(ours.ok_rows, theirs.ok_rows)
        np.testing.assert_array_equal(ours.images, theirs.images)
    assert flatten(processes)[2] == [failures.get(row, "ok") for row in range(len(refs))]


def test_batches_stay_valid_after_the_next_ones(files):
    """Slots of shared memory are reused; the batches handed out are copies."""
    refs = many(files, 60)

    kept = list(iter_batches(refs, SETTINGS, 4, workers=2, processes=True))
    again = list(iter_batches(refs, SETTINGS, 4, workers=0))

    for ours, theirs in zip(kept, again, strict=True):
        np.testing.assert_array_equal(ours.images, theirs.images)


def test_workers_end_with_the_iterator(files):
    batches = iter_batches(many(files, 40), SETTINGS, 4, workers=2, processes=True)
    next(batches)
    pids = workers_of(os.getpid())
    assert len(pids) == 2

    list(batches)

    assert gone(pids)


def test_break_and_consumer_errors_kill_the_workers(files):
    def consume() -> None:
        for _ in iter_batches(many(files, 400), SETTINGS, 4, workers=2, processes=True):
            pids.extend(workers_of(os.getpid()))
            raise RuntimeError("inference failed")

    pids: list[int] = []
    with pytest.raises(RuntimeError, match="inference failed"):
        run_with_timeout(consume)

    assert len(pids) == 2 and gone(pids)


def test_an_error_in_a_worker_reaches_the_consumer_and_ends_the_workers(files):
    """A bug (here: an unknown resize method) is raised in the consumer, not turned into rows."""
    settings = DecodeSettings(Preprocessing(height=5, width=5, resize_method="nonsense"))
    batches = iter_batches(many(files, 20), settings, 4, workers=2, processes=True)

    with pytest.raises(KeyError, match="nonsense"):
        next(batches)
    assert workers_of(os.getpid()) == []


def test_a_dead_worker_is_a_clear_error(files):
    batches = iter_batches(many(files, 400), SETTINGS, 4, workers=2, processes=True)
    next(batches)
    victim, other = workers_of(os.getpid())
    os.kill(victim, signal.SIGKILL)

    with pytest.raises(DecodeWorkerError, match="killed by signal 9.*--resume"):
        run_with_timeout(lambda: list(batches))

    assert gone([victim, other])


def test_closing_the_pool_kills_a_stopped_worker_at_once(files):
    """A worker that never answers (stopped here; a read on a hung mount in real life)."""
    pool = ProcessPool(2)
    pool.start(SETTINGS, 4, 2)
    pids = pool.pids
    os.kill(pids[0], signal.SIGSTOP)

    started = time.monotonic()
    pool.close()

    assert time.monotonic() - started < 3
    assert gone(pids)


def test_a_pool_that_is_never_used_is_killed_when_dropped():
    """Started early by scorer.score, then an error (a bad model, a locked output) before use."""
    pool = ProcessPool(2)
    pids = pool.pids
    assert all(alive(pid) for pid in pids)

    del pool

    assert gone(pids)


def test_an_early_started_pool_gives_the_same_batches(files):
    refs, _ = files
    pool = ProcessPool(2)
    pids = pool.pids

    early = list(iter_batches(refs, SETTINGS, 5, workers=2, pool=pool))
    late = list(iter_batches(refs, SETTINGS, 5, workers=2, processes=True))

    for ours, theirs in zip(early, late, strict=True):
        assert ours.status == theirs.status
        np.testing.assert_array_equal(ours.images, theirs.images)
    assert len(pids) == 2 and gone(pids)


def test_workers_leave_when_their_parent_is_killed(tmp_path, files):
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT / 'tests' / 'support')!r})
        from images_support import SETTINGS, make_files, many
        from scorer.images.batches import iter_batches
        files = make_files(__import__("pathlib").Path({str(tmp_path / 'more')!r}))
        batches = iter_batches(many(files, 4000), SETTINGS, 4, workers=2, processes=True)
        next(batches)
        print("started", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)
    try:
        assert process.stdout.readline() == "started\n"
        pids = workers_of(process.pid)
        assert len(pids) == 2
        process.kill()
        process.wait()

        assert gone(pids, seconds=10)
    finally:
        if process.poll() is None:
            process.kill()


def test_sigterm_ends_a_run_decoding_in_processes_within_seconds(tmp_path):
    """As tests/scorer/test_faults.py for threads: a worker that never answers must not keep the
    run."""
    from faults_support import images, score_args
    from scorer_support import sigterm_ends_within

    root = images(tmp_path / "images", 40)
    out = tmp_path / "out.h5"
    process = subprocess.Popen(score_args(root, out, "--workers", "2", "--decode-processes",
                                          quiet=False),
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        process.stderr.readline()  # the start line: the run is under way
        deadline = time.monotonic() + 10
        while len(pids := workers_of(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # the workers stop answering
        time.sleep(0.5)
        sigterm_ends_within(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert gone(pids)


@pytest.mark.parametrize("flags", [["--decode-processes"], ["--decoder", "pillow"],
                                   ["--decode-processes", "--decoder", "pillow", "--workers", "3"]])
def test_scores_do_not_depend_on_the_decoder_or_where_it_runs(tmp_path, flags):
    """The regression images (PNG digits, a JPEG photo, a PNG photo, a broken JPEG) scored with
    the defaults (threads, libjpeg-turbo) and with ``flags``: every dataset bit for bit."""
    import h5py
    from click.testing import CliRunner

    from scorer.cli.main import main

    data = ROOT / "tests" / "data" / "regression"
    outputs = []
    for name, extra in (("default", []), ("other", flags)):
        out = tmp_path / f"{name}.h5"
        result = CliRunner().invoke(main, [str(data / "images"), str(out), "--model",
                                           str(data / "model.onnx"), "--passes", "20",
                                           "--device", "cpu", "--save-passes", "-q", *extra])
        assert result.exit_code == 3, result.output  # broken.jpg fails on purpose
        outputs.append(out)

    with h5py.File(outputs[0]) as default, h5py.File(outputs[1]) as other:
        assert set(default) == set(other)
        for name in default:
            np.testing.assert_array_equal(default[name][()], other[name][()], err_msg=name)
        assert list(default["status"].asstr()[()]).count("truncated") == 1


@pytest.mark.parametrize(("threshold", "flag", "expected"), [
    (15, None, True), (16, None, False), (1, False, False), (10**6, True, True)])
def test_decode_processes_by_default_only_for_large_runs(monkeypatch, tmp_path, threshold, flag,
                                                         expected):
    """15 images: processes when the threshold is at most 15 (or asked for), threads otherwise."""
    import scorer.scoring
    from scorer.images.listing import discover
    from scorer.scoring import ScoreOptions, score

    asked = []
    monkeypatch.setattr(scorer.scoring, "PROCESSES_FROM_IMAGES", threshold)
    monkeypatch.setattr(scorer.scoring, "start_processes",
                        lambda workers, processes: asked.append(processes))
    data = ROOT / "tests" / "data" / "regression"
    assert len(discover(data / "images")) == 15
    score(data / "images", tmp_path / "out.h5", data / "model.onnx",
          ScoreOptions(passes=2, decode_processes=flag, merge_in_child=False))
    assert asked == [expected]
