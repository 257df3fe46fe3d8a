"""A run in progress lives in ``OUT.parts/``, next to the output, until it is complete.

::

    OUT.parts/
        lock        held with flock(2) by the process writing; names its pid and host
        job.json    the run's identity (model, seed, passes, decoding settings, input list) and
                    the header of the results file, written once, atomically
        shard-00000/000000000000-000000001500.npz ...   committed rows (:mod:`scorer.rundir.segments`)

The lock is taken before anything is created, truncated or removed, so a second run on the same
output (``--overwrite`` included) stops with an error instead of damaging the first. ``finish``
merges the segments into a temporary file inside ``OUT.parts/``, fsyncs it, renames it over
``OUT`` and only then removes ``OUT.parts/``: ``OUT`` is always either absent, the previous
complete file, or the new complete file.

A schema-1 partial (``OUT.partial``, one HDF5 file) left by an older mcd-score is imported on
``--resume``: its complete rows become the first segment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py

from scorer.atomic import atomic_write, fsync_path
from scorer.errors import OutputError
from scorer.results.schema import FileHeader
from scorer.results.stitch import source_files
from scorer.rundir import legacy, merge, segments
from scorer.rundir.child import ChildFailed, run_module
from scorer.rundir.segments import Segment, SegmentWriter

JOB_FILE = "job.json"
LOCK_FILE = "lock"
JOB_FORMAT = 1


def parts_path(out: Path) -> Path:
    """The folder of a run in progress: ``OUT.parts``."""
    return out.with_name(out.name + ".parts")


def rows_folder(parts: Path) -> Path:
    """Where a run's committed row segments are, inside its ``OUT.parts/`` (the folder name is
    kept from when one run could hold several: interrupted runs must still resume)."""
    return parts / "shard-00000"


def check_output_path(out: Path) -> None:
    """Refuse output paths that cannot hold a results file, before anything is written.

    Raises:
        OutputError: The path is empty, a folder, an existing non-regular file (device, FIFO,
            socket), or its folder is missing or not writable.
    """
    if not str(out) or str(out) in (".", "..") or out.name in ("", ".", ".."):
        raise OutputError(f"the output path {str(out)!r} is not a file name; give a path such "
                          "as results.h5")
    with contextlib.suppress(FileNotFoundError):
        mode = out.stat().st_mode
        if stat.S_ISDIR(mode):
            raise OutputError(f"the output {out} is a folder; give a file name inside it, e.g. "
                              f"{out / 'results.h5'}")
        if not stat.S_ISREG(mode):
            raise OutputError(f"the output {out} exists and is not a regular file (a device, "
                              "FIFO or socket); mcd-score only replaces regular files")
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: folder {parent} is not writable; choose a "
                          "writable output folder")


def refuse_existing(out: Path, mode: str) -> None:
    """Refuse, before anything slow starts, a new run whose output exists.

    The cheap early answer of :meth:`RunDir.open` for the usual case (a finished OUT and no run
    folder); everything else is checked there, under the lock.

    Raises:
        OutputError: The output path cannot hold a results file, or ``mode`` is ``new`` and OUT
            exists with no run in progress beside it.
    """
    check_output_path(out)
    if mode == "new" and out.exists() and not parts_path(out).exists():
        raise OutputError(already_exists(out))


def already_exists(out: Path) -> str:
    return (f"output file {out} already exists; use --overwrite to replace it or --resume to "
            "continue an interrupted run")


class RunDir:
    """The locked ``OUT.parts/`` folder of one run; use :meth:`open` and close (or finish) it."""

    def __init__(self, out: Path, header: FileHeader, identity: Mapping[str, Any]) -> None:
        self.out = out
        self.path = parts_path(out)
        self.header = header
        self.identity = dict(identity)
        self.job_id = uuid.uuid4().hex[:12]  # replaced by the stored one when resuming
        self._lock_fd: int | None = None

    @classmethod
    def open(cls, out: Path, header: FileHeader, identity: Mapping[str, Any], mode: str) -> RunDir:
        """Lock ``OUT.parts/`` and prepare it for ``mode`` (``new``, ``overwrite``, ``resume``).

        Raises:
            OutputError: Another run holds the lock, OUT or an interrupted run exists for
                ``new``, OUT is complete for ``resume``, or the interrupted run differs.
        """
        out = Path(out)
        check_output_path(out)
        run = cls(out, header, identity)
        run._lock()
        fresh = not any(entry.name != LOCK_FILE for entry in run.path.iterdir())
        try:
            run._prepare(mode)
        except BaseException:
            if fresh:  # leave no empty OUT.parts/ behind a refused run
                shutil.rmtree(run.path, ignore_errors=True)
            run.close()
            raise
        return run

    # ---- locking ----------------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create {self.path}: {error.strerror}") from error
        lock = self.path / LOCK_FILE
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(
                    f"{self.out} is being written by another mcd-score run ({holder}); wait for "
                    "it to finish, or stop it and run again with --resume"
                ) from None
            try:  # the holder may have removed OUT.parts/ after finishing; lock the new one
                if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                    break
            except FileNotFoundError:
                self.path.mkdir(exist_ok=True)
            os.close(fd)
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (the folder stays for ``--resume``). Idempotent."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- modes ------------------------------------------------------------------------------

    def _prepare(self, mode: str) -> None:
        job, old = self.path / JOB_FILE, legacy.partial_path(self.out)
        if not job.exists():  # job.json is written before any row: rows without it are garbage
            self._clear()  # of a run that finished (or never started) when it was killed
        if mode == "new":
            if self.out.exists():
                raise OutputError(already_exists(self.out))
            if job.exists() or old.exists():
                raise OutputError(f"found an interrupted run in {job.parent if job.exists() else old};"
                                  " use --resume to continue it or --overwrite to start again")
        elif mode == "overwrite":
            self._clear()
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        elif mode == "resume":
            if job.exists():
                stored = _read_json(job)
                self._check_identity(stored)
                self.job_id = stored.get("id", self.job_id)
            elif not old.exists() and self.out.exists():
                raise OutputError(f"{self.out} is already complete; use --overwrite to score again")
        else:
            raise ValueError(f"mode must be new, overwrite or resume, got {mode!r}")
        if not job.exists():
            self._write_job()
        if old.exists():
            if not self.committed():
                legacy.import_partial(old, self.header, self.identity, self.rows_path)
            old.unlink()

    def _clear(self) -> None:
        """Remove everything but the lock and the part files the current OUT reads."""
        keep = {LOCK_FILE, *self._referenced()}
        for entry in self.path.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _referenced(self) -> set[str]:
        """Names in OUT.parts/ of the part files a stitched OUT reads (they must stay)."""
        try:
            with h5py.File(self.out, "r") as file:
                files = source_files(file, self.out)
        except OSError:  # no OUT, or not HDF5: nothing to keep
            return set()
        return {f.name for f in files if f.parent.resolve() == self.path.resolve()}

    def _write_job(self) -> None:
        data = {"format": JOB_FORMAT, "id": self.job_id, "identity": self.identity,
                "header": asdict(self.header)}
        text = json.dumps(data, sort_keys=True, indent=1).encode()
        try:
            atomic_write(self.path / JOB_FILE, text)
        except OSError as error:
            raise segments.write_error(self.path / JOB_FILE, error) from error

    def _check_identity(self, stored: dict[str, Any]) -> None:
        before = json.loads(json.dumps(stored.get("identity", {})))
        now = json.loads(json.dumps(self.identity))
        differing = [f"{name}: {before.get(name)!r} (interrupted run) vs {now.get(name)!r} (now)"
                     for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)]
        if differing:
            raise OutputError(f"cannot resume {self.path}: it was started with different settings "
                              f"or inputs; {'; '.join(differing)}. Rerun with the same settings, "
                              "or use --overwrite to start again")

    # ---- rows ---------------------------------------------------------------------------------

    @property
    def rows_path(self) -> Path:
        return rows_folder(self.path)

    def committed(self) -> list[Segment]:
        return segments.committed(self.rows_path)

    def writer(self, flush_seconds: float = segments.FLUSH_SECONDS) -> SegmentWriter:
        """The writer appending to the committed rows (rows commit at least every
        ``flush_seconds``: what a kill can cost)."""
        folder = self.rows_path
        folder.mkdir(exist_ok=True)
        return SegmentWriter(folder, segments.rows_in(self.committed()), flush_seconds)

    def part_path(self, shard: int) -> Path:
        """The part file of ``shard`` in a sharded run (named after the job: a new job's parts
        never overwrite the parts a stitched OUT reads)."""
        return self.path / f"{self.job_id}-part-{shard:05d}.h5"

    def finish(self, attrs: Mapping[str, Any], parts: list[tuple[Path, int]] | None = None,
               consolidate: bool = True, in_child: bool = True) -> Path:
        """Write ``OUT`` (atomically) and remove what it does not need of ``OUT.parts/``.

        Args:
            attrs: Root attributes to add (e.g. ``end_time``).
            parts: ``(part file, rows)`` of a sharded run, in row order; None for a local run,
                whose committed segments are merged.
            consolidate: With ``parts``: copy them into one plain file (and remove them), or
                stitch them with virtual datasets (they stay in ``OUT.parts/``).
            in_child: Write in a child process (see :mod:`scorer.rundir.child`); False writes here,
                for a Ray worker, which Ray replaces if a failed HDF5 write crashes it later.

        Raises:
            OutputWriteError: OUT could not be written; the committed rows and parts stay.
        """
        header = FileHeader(**{**asdict(self.header), "attrs": {**self.header.attrs, **attrs}})
        temporary = self.path / "final.h5.tmp"
        payload: dict[str, Any] = {"path": str(temporary), "header": asdict(header)}
        if parts is None:
            payload.update(mode="segments", segments=[(s.start, s.stop, str(s.path))
                                                      for s in self.committed()])
        else:
            payload.update(mode="consolidate" if consolidate else "stitch", folder=str(self.out.parent),
                           parts=[(str(path), rows) for path, rows in parts])
        try:
            if in_child:
                run_module(merge.MODULE, payload)
            else:
                merge.write(payload)
            fsync_path(temporary)
            os.replace(temporary, self.out)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if isinstance(error, ChildFailed) and shutil.disk_usage(self.path).free < 1 << 20:
                error = OSError(errno.ENOSPC, f"No space left on device ({error.strerror})")
            raise segments.write_error(self.out, error) from error
        fsync_path(self.out.parent, directory=True)
        self._clean_up()
        return self.out

    def _clean_up(self) -> None:
        """After OUT's rename: drop job.json first (what is left is then garbage), then all but
        the part files OUT reads."""
        with contextlib.suppress(OSError):
            (self.path / JOB_FILE).unlink()
            fsync_path(self.path, directory=True)
            if self._referenced():
                self._clear()
                (self.path / LOCK_FILE).unlink()
            else:
                shutil.rmtree(self.path)
        self.close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OutputError(f"{path} is damaged ({error}); use --overwrite to start again") from error


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "process unknown"


__all__ = ["RunDir", "check_output_path", "parts_path", "rows_folder"]
