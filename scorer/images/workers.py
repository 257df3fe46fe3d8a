"""Decode in worker processes that write the rows straight into shared memory.

Threads share one GIL: Pillow's Python glue, hashing bookkeeping and numpy calls of the decode
threads and the scoring thread's own Python work (metrics, rows, commits) take turns, which on a
small model costs half the end-to-end rate. Here each of ``processes`` workers (a fresh
``python -m scorer.images.workers``, never a fork of this process: ONNX Runtime's threads do not
survive a fork) reads, hashes and decodes its files with :func:`scorer.images.load.load`, writing
each ``float32`` row into a slot of one shared buffer; only the file names go to the worker and
only the keys, statuses and reasons come back, through pipes, a few bytes per image.

The buffer is an anonymous memory file (``memfd_create``; elsewhere a temporary file removed at
once) handed to the workers as a file descriptor, so it has no name that could be left behind: it
is freed when the last process holding it ends, however it ends. Each batch is split into a few
contiguous pieces given to the workers in turn; a reader thread per worker collects its answers,
so a worker never blocks on a full pipe.

A worker ignores SIGINT and SIGTERM (the parent decides when it ends), leaves when its task pipe
closes, and also when its parent has gone (checked every second, for a worker stuck in a read).
Closing the pool kills the workers with SIGKILL and does not wait for one that will not die (a
read on a hung network mount), so Ctrl-C, SIGTERM or an error end the run at once.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

from scorer.errors import ScorerError
from scorer.images.listing import ImageRef
from scorer.images.load import load, lower_priority
from scorer.rundir.child import child_command, child_env

_HEADER = 4  # bytes of the length prefix of a message
_EXIT_GRACE = 1.0  # seconds to wait for a killed worker before leaving it to the OS
Answer = tuple[int, str, str, str]  # row in the slot, key, status, reason


class DecodeWorkerError(ScorerError):
    """A decoding process ended unexpectedly or failed outside the per-file error handling."""


def available() -> bool:
    """Whether worker processes can be used here (passing file descriptors needs POSIX)."""
    return os.name == "posix"


def write_message(stream: BinaryIO, message: Any) -> None:
    """Send one pickled message, prefixed with its length."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(_HEADER, "little") + data)
    stream.flush()


def read_message(stream: BinaryIO) -> Any:
    """Receive one message; ``None`` when the other end has closed the pipe."""
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "little")
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def shared_buffer(size: int) -> int:
    """A file descriptor of ``size`` bytes of memory with no name in any file system."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mcd-score-decode", os.MFD_CLOEXEC)
    else:  # pragma: no cover - macOS and other POSIX systems
        fd, name = tempfile.mkstemp(prefix="mcd-score-decode-", dir="/dev/shm"
                                    if os.path.isdir("/dev/shm") else None)
        os.unlink(name)
    os.ftruncate(fd, max(size, 1))
    return fd


class ProcessPool:
    """``processes`` decode workers writing rows into slots of one shared buffer.

    The processes start at once (their interpreter start-up can overlap the model loading);
    :meth:`start` then sizes the buffer for ``slots`` batches of ``rows`` rows and sends the
    decode settings. A pool that is never closed is killed when it is garbage-collected or at
    exit.

    Args:
        processes: Worker processes (at least 1).
    """

    def __init__(self, processes: int) -> None:
        self._fd = shared_buffer(0)
        self._workers: list[_Worker] = []
        self._buffer: mmap.mmap | None = None
        self._next = 0
        try:
            for index in range(processes):
                self._workers.append(_Worker(index, self._fd))
        except BaseException:
            self.close()
            raise
        self._finalizer = weakref.finalize(self, _kill_all, list(self._workers))

    def start(self, settings: Any, rows: int, slots: int) -> None:
        """Size the buffer for ``slots`` batches of ``rows`` rows and send ``settings`` (a
        :class:`scorer.images.load.DecodeSettings`) to the workers."""
        self.shape = settings.row_shape
        self.row_bytes = int(np.prod(self.shape)) * 4
        self.rows = rows
        size = max(self.row_bytes * rows * slots, 1)
        os.ftruncate(self._fd, size)
        self._buffer = mmap.mmap(self._fd, size)
        for worker in self._workers:
            worker.send((settings, self.row_bytes))

    def slot(self, index: int) -> np.ndarray:
        """The ``float32`` rows of slot ``index``, ``[rows, *row_shape]`` (a view of the buffer)."""
        start = index * self.rows * self.row_bytes
        return np.ndarray((self.rows, *self.shape), np.float32, self._buffer, offset=start)

    def submit(self, slot: int, refs: Sequence[ImageRef]) -> list[_Worker]:
        """Give the files of one batch to the workers in contiguous pieces, round robin.

        Returns:
            The worker of each piece, in order: what :meth:`collect` waits for.
        """
        pieces = min(len(refs), 2 * len(self._workers))
        bounds = [round(i * len(refs) / pieces) for i in range(pieces + 1)] if pieces else [0]
        base = slot * self.rows * self.row_bytes
        tickets = []
        for start, stop in zip(bounds, bounds[1:], strict=False):
            worker = self._workers[self._next % len(self._workers)]
            self._next += 1
            worker.send((base, [(row, refs[row]) for row in range(start, stop)]))
            tickets.append(worker)
        return tickets

    def collect(self, tickets: list[_Worker]) -> list[Answer]:
        """The answers of one batch's pieces, in row order (waits for them)."""
        answers: list[Answer] = []
        for worker in tickets:
            answers.extend(worker.receive())
        return sorted(answers)

    def close(self) -> None:
        """Kill the workers (waiting at most a second for one stuck in a read) and free the
        buffer."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()  # kills the workers, once
        else:
            _kill_all(self._workers)
        self._workers = []
        if self._buffer is not None:
            with contextlib.suppress(BufferError, ValueError):
                self._buffer.close()  # views still held by the caller keep the memory alive
        with contextlib.suppress(OSError):
            os.close(self._fd)

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]


def _kill_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.reap()


class _Worker:
    """One worker process, its task pipe, and a thread reading its answers into a queue."""

    def __init__(self, index: int, fd: int) -> None:
        answers_read, answers_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                child_command("scorer.images.workers", str(fd), str(answers_write),
                              str(os.getpid())),
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(fd, answers_write),
                env=child_env())
        finally:
            os.close(answers_write)
        self.index = index
        self._answers = os.fdopen(answers_read, "rb")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, name=f"mcd-decode-reader-{index}", daemon=True).start()

    def send(self, message: Any) -> None:
        try:
            write_message(self.process.stdin, message)
        except (BrokenPipeError, ValueError) as error:
            raise self._died() from error

    def receive(self) -> list[Answer]:
        message = self._queue.get()
        if message is None:
            raise self._died()
        if isinstance(message, BaseException):
            raise message
        if isinstance(message, tuple) and message and message[0] == "error":
            raise DecodeWorkerError(f"decoding process {self.index} failed: {message[1]}")
        return message

    def _read(self) -> None:
        """Queue every answer; ends (closing the pipe) when the worker has gone."""
        with contextlib.suppress(OSError, ValueError), self._answers:
            while (message := read_message(self._answers)) is not None:
                self._queue.put(message)
        self._queue.put(None)

    def _died(self) -> DecodeWorkerError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(_EXIT_GRACE)
        code = self.process.poll()
        how = ("is still running" if code is None else f"was killed by signal {-code}" if code < 0
               else f"exited with code {code}")
        return DecodeWorkerError(
            f"decoding process {self.index} (pid {self.process.pid}) stopped answering: it {how}; "
            "the rows committed so far are kept: run again with --resume, or decode in threads "
            "(--decode-threads) if it happens again")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()

    def reap(self) -> None:
        """Wait briefly for the killed process; one stuck in the kernel is left to the OS."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(_EXIT_GRACE)


# ---- the worker process -------------------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    """End this process when its parent has gone (e.g. killed while this one is stuck)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _serve(tasks: BinaryIO, answers: BinaryIO, fd: int) -> None:
    lower_priority(thread=False)
    first = read_message(tasks)
    if first is None:
        return
    settings, row_bytes = first
    buffer = mmap.mmap(fd, os.fstat(fd).st_size)  # sized by the parent before it sent them
    shape = settings.row_shape
    while (task := read_message(tasks)) is not None:
        base, rows = task
        done: list[Answer] = []
        try:
            for row, ref in rows:
                out = np.ndarray(shape, np.float32, buffer, offset=base + row * row_bytes)
                loaded = load(ref, settings, out)
                done.append((row, loaded.key, loaded.status, loaded.reason))
        except Exception as error:  # noqa: BLE001 - a bug, not a bad file: the parent raises it
            write_message(answers, _portable(error))
            continue
        write_message(answers, done)


def _portable(error: Exception) -> Exception | tuple[str, str]:
    """The exception itself if it survives pickling, else its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return ("error", f"{type(error).__name__}: {error}")


def main(argv: list[str]) -> None:
    """Worker entry point: ``python -m scorer.images.workers BUFFER_FD ANSWERS_FD PARENT_PID``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, answers_fd, parent = (int(value) for value in argv)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        with os.fdopen(answers_fd, "wb") as answers:
            _serve(sys.stdin.buffer, answers, fd)
    except BrokenPipeError:  # the scorer is gone (killed): nobody to answer, nothing to report
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
