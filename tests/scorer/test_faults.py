"""Faults of unattended batch jobs: kill -9, a full disk, a second job on the same output, a hung
reader. Each runs the real ``mcd-score`` command in a subprocess."""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults_support import images, score_args
from paths import ROOT
from scorer_support import assert_same_datasets, sigterm_ends_within


def test_random_sigkills_then_resume_give_the_clean_result():
    """The fault-injection script, small: every kill resumes to a bit-identical file."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "fault_injection.py"),
                             "--trials", "4", "--images", "150", "--seed", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 identical to a clean run" in result.stdout


@contextlib.contextmanager
def small_filesystem(path: Path, kilobytes: int):
    """A tmpfs of the given size mounted at ``path`` (root only), unmounted afterwards."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(path)],
                             capture_output=True, check=False).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=False)


def file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("phase", ["scoring", "merging"])
def test_a_full_disk_is_one_line_exit_4_and_resumes_when_space_is_free(tmp_path, phase):
    """A full disk, while scoring or while merging, is one line on stderr and exit 4, with no
    output; once there is space --resume gives the results of a clean run. Reproduced with a small
    tmpfs (or, without root, RLIMIT_FSIZE)."""
    root = images(tmp_path / "images", 120)
    clean = tmp_path / "clean.h5"
    subprocess.run(score_args(root, clean), check=True, capture_output=True)
    segment_bytes = 120 * 60 * 10 * 4 + 120 * 200  # passes dominate the uncompressed segments
    disk = tmp_path / "disk"
    # too small for the segments, or big enough for them but not for the merged file as well
    kilobytes = segment_bytes // 2048 if phase == "scoring" else (segment_bytes + 150_000) // 1024
    with small_filesystem(disk, kilobytes) as mounted:
        if not mounted:
            disk.mkdir(exist_ok=True)
        out = disk / "out.h5"
        limit = file_size_limit(segment_bytes // 4 if phase == "scoring" else 2 * segment_bytes)
        failed = subprocess.run(score_args(root, out), capture_output=True, text=True,
                                preexec_fn=None if mounted else limit)
        assert failed.returncode == 4, failed.stderr
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
        space = "No space left on device" if mounted else "File too large"
        assert f"cannot write {disk}" in lines[0] and space in lines[0] and "--resume" in lines[0]
        assert not out.exists()
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        resumed = subprocess.run(score_args(root, out, "--resume"), capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert_same_datasets(clean, out)


def test_a_second_job_on_the_same_output_is_refused_without_touching_the_first(tmp_path):
    """A concurrent --overwrite or --resume exits 2 naming the running job's pid; that job finishes
    untouched, with the results of a clean run."""
    root = images(tmp_path / "images", 40)
    out = tmp_path / "out.h5"
    # the first job commits rows, then is still running for 3 s on its last image
    slowed = WRAPPED.format(slow="time.sleep(3 if ref.path.endswith('0039.png') else 0.02)")
    first = subprocess.Popen([sys.executable, "-c", slowed, *score_args(root, out)[1:]],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out.h5.parts").glob("shard-*/*.npz")):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.01)
        for mode in ("--overwrite", "--resume"):
            second = subprocess.run(score_args(root, out, mode), capture_output=True, text=True)
            assert second.returncode == 2, second.stderr
            assert "is being written by another mcd-score run" in second.stderr
            assert f"pid {first.pid}" in second.stderr and "--overwrite" not in second.stderr
        assert first.wait(timeout=120) == 0
        assert HIT in first.stderr.read(), "the slowed reader was never called"
    finally:
        if first.poll() is None:
            first.kill()
    clean = tmp_path / "clean.h5"
    subprocess.run(score_args(root, clean), check=True, capture_output=True)
    assert_same_datasets(clean, out)


WRAPPED = """
import sys, threading, time
import scorer.images.load
real = scorer.images.load.read_file
def read_file(ref, *args):
    if not getattr(read_file, "hit", False):
        read_file.hit = True
        print("patched read_file hit", file=sys.stderr, flush=True)
    {slow}
    return real(ref, *args)
scorer.images.load.read_file = read_file
from scorer.cli.main import main
sys.argv = ["mcd-score", *sys.argv[1:], "--decode-threads"]  # the reader patched above is this process's
main()
"""
HIT = "patched read_file hit"
"""What the patched reader prints the first time it runs: the test proves its fault was injected."""


def test_sigterm_ends_a_run_within_seconds_even_with_a_hung_reader(tmp_path):
    """SIGTERM ends the run even while a read never returns (here: 0003.png, as on a hung network
    mount): nothing waits for the stuck read."""
    root = images(tmp_path / "images", 40)
    out = tmp_path / "out.h5"
    process = subprocess.Popen([sys.executable, "-c", WRAPPED.format(
        slow="ref.path.endswith('0003.png') and threading.Event().wait()"),
                                *score_args(root, out, "--workers", "2", quiet=False)[1:]],
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stderr.readline(), process.stderr.readline()]
        assert any(HIT in line for line in lines), lines  # under way, and stuck on 0003.png
        time.sleep(1.0)
        assert process.poll() is None
        sigterm_ends_within(process)
    finally:
        if process.poll() is None:
            process.kill()


def test_a_folder_named_scorer_where_the_tool_runs_does_not_stand_in_for_it(tmp_path):
    """The decode workers and the merge child are fresh interpreters started with ``-m``: the
    user's current folder must not come first on their path."""
    root = images(tmp_path / "images", 12)
    fake = tmp_path / "work" / "scorer"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('the wrong scorer package')\n")
    (fake / "rundir").mkdir()
    (fake / "rundir" / "__init__.py").write_text("")
    out = tmp_path / "out.h5"
    result = subprocess.run(score_args(root, out, "--decode-processes", "--workers", "2"),
                            cwd=fake.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.exists() and "wrong scorer" not in result.stderr
