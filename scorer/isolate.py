"""Run the results-file write in a separate Python process, so that a crash of HDF5 cannot take
the caller.

HDF5 does not recover from a failed write: after ``No space left on device`` its file stays half
open and the process crashes with a segmentation fault, at the next HDF5 call or at exit. The
finished file is therefore written by ``python -m scorer.merge`` in a child process (a fresh
interpreter: forking a process that runs ONNX Runtime or TensorFlow threads can deadlock), and
any failure becomes a clean :class:`ChildFailed` in the parent, which keeps every committed row.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class ChildFailed(OSError):
    """The child's work raised (``strerror`` is its reason) or the child died of a signal."""


def run_module(module: str, payload: dict[str, Any]) -> None:
    """Run ``python -m module`` with ``payload`` as JSON on its stdin and wait for it.

    Raises:
        ChildFailed: The child exited non-zero (its last stderr line is the reason) or was killed.
    """
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, *([path] if path else [])])}
    done = subprocess.run([sys.executable, "-m", module], input=json.dumps(payload), text=True,
                          capture_output=True, env=env, check=False)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ChildFailed(0, f"the writing process was killed by {name}")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise ChildFailed(0, short_reason(lines[-1] if lines else "the writing process failed"))


def short_reason(message: str) -> str:
    """The errno text of an HDF5 driver error (e.g. 'No space left on device'), else the message."""
    match = re.search(r"error message = '([^']+)'", message)
    return match.group(1) if match else message.strip()
