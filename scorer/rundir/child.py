"""Run the results-file write in a separate Python process, so that a crash of HDF5 cannot take
the caller.

HDF5 does not recover from a failed write: after ``No space left on device`` its file stays half
open and the process crashes with a segmentation fault, at the next HDF5 call or at exit. The
finished file is therefore written by ``python -m scorer.rundir.merge`` in a child process (a fresh
interpreter: forking a process that runs ONNX Runtime or TensorFlow threads can deadlock), and
any failure becomes a clean :class:`ChildFailed` in the parent, which keeps every committed row.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the scorer package

_waiting: dict[str, subprocess.Popen] = {}  # children started ahead, waiting for their payload


class ChildFailed(OSError):
    """The child's work raised (``strerror`` is its reason) or the child died of a signal."""


def prestart(module: str) -> None:
    """Start ``python -m module`` now, to be given its payload by the next :func:`run_module`:
    the interpreter's start and the module's imports (0.2 s for scorer.rundir.merge) then overlap the
    caller's work. A child already waiting (from a run that stopped before its merge) is replaced:
    it has the umask, directory and environment of that run, not of this one."""
    _stop(_waiting.pop(module, None))
    _waiting[module] = _start(module)


def run_module(module: str, payload: dict[str, Any]) -> None:
    """Run ``python -m module`` (the one :func:`prestart` started, if any) with ``payload`` as
    JSON on its stdin and wait for it.

    Raises:
        ChildFailed: The child exited non-zero (its last stderr line is the reason) or was killed.
    """
    child = _waiting.pop(module, None)
    if child is None or child.poll() is not None:
        child = _start(module)
    _, stderr = child.communicate(json.dumps(payload))
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        raise ChildFailed(0, f"the writing process was killed by {name}")
    if child.returncode != 0:
        lines = stderr.strip().splitlines()
        raise ChildFailed(0, short_reason(lines[-1] if lines else "the writing process failed"))


def child_command(module: str, *arguments: str) -> list[str]:
    """``python -P -m module ...``: ``-P`` keeps the current folder off the child's path, so a
    folder named ``scorer`` where the user runs the tool cannot stand in for this package."""
    return [sys.executable, "-P", "-m", module, *arguments]


def child_env() -> dict[str, str]:
    """The environment of a ``python -m scorer...`` child: this one, with this package first on
    ``PYTHONPATH`` (so the child runs the same scorer, installed or not)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, *([path] if path else [])])}


def _start(module: str) -> subprocess.Popen:
    return subprocess.Popen(child_command(module), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=child_env())


@atexit.register
def _stop_waiting() -> None:
    """Children started ahead and never used: kill and reap them."""
    while _waiting:
        _stop(_waiting.popitem()[1])


def _stop(child: subprocess.Popen | None) -> None:
    if child is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            child.kill()
            child.communicate(timeout=5)


def short_reason(message: str) -> str:
    """The errno text of an HDF5 driver error (e.g. 'No space left on device'), else the message."""
    match = re.search(r"error message = '([^']+)'", message)
    return match.group(1) if match else message.strip()
