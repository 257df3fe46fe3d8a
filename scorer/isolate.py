"""Run a write in a forked child process, so that a crash of a C library cannot take the caller.

HDF5 does not recover from a failed write: after ``No space left on device`` its file stays half
open and the process crashes with a segmentation fault at exit. Writing the results file in a
child (``fork``; it exits with ``os._exit``, skipping HDF5's exit handlers) turns any failure into
a clean error in the parent, which keeps running and keeps every committed row.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable


class ChildFailed(OSError):
    """The child's work raised (``reason`` is its message) or the child died of a signal."""


def run_in_child(work: Callable[[], None]) -> None:
    """Call ``work()`` in a forked child and wait for it.

    Raises:
        ChildFailed: ``work`` raised, or the child was killed; ``strerror`` says why.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)  # HDF5's own complaints; the reason goes to the parent through the pipe
        code = 0
        try:
            work()
        except BaseException as error:  # reported to the parent, whatever it is
            code = 1
            text = error.strerror if isinstance(error, OSError) and error.strerror else \
                f"{type(error).__name__}: {error}"
            os.write(write_end, text.encode("utf-8", "replace"))
        os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    message = b"".join(chunks).decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise ChildFailed(0, f"the writing process was killed by {name}")
    if os.WEXITSTATUS(status) != 0:
        raise ChildFailed(0, short_reason(message))


def short_reason(message: str) -> str:
    """The errno text of an HDF5 driver error (e.g. 'No space left on device'), else the message."""
    match = re.search(r"error message = '([^']+)'", message)
    return match.group(1) if match else message.strip().splitlines()[0] if message.strip() else "failed"
