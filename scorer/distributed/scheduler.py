"""Handing shards to Ray actors, and what happens when an actor dies.

Each actor is in one of four states: ``starting`` (created, or restarting after it died, and not
yet known to be alive), ``idle``, ``busy`` (scoring a shard) or ``gone``. A shard is given only to
an idle actor, one that has answered since it was last seen dead (its first ping, or its previous
shard), so an attempt that ends in an actor error ran on a live actor and counts against
``RayOptions.retries``; the calls Ray refuses while it restarts an actor
(``ActorUnavailableError``, answered in milliseconds) never reach a shard. A dead actor is probed
with a cheap call every :data:`PROBE_SECONDS` until Ray has restarted it; one that is not back
within ``RayOptions.restart_wait`` seconds, or whose constructor fails (a restart that cannot
succeed), is given up and the run goes on with the others. When no actor is left, the run ends
with :class:`ShardsFailed` naming every shard not done and why. A shard's attempts resume from its
committed rows, so a retry never changes the result.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scorer.distributed.shards import Shard, rows_committed
from scorer.distributed.worker import UnreadableShard
from scorer.errors import ScorerError
from scorer.images.listing import ImageRef

POLL_SECONDS = 1.0  # longest wait for a result before the progress is reported again
PROBE_SECONDS = 0.5  # between two pings of an actor that Ray is restarting


class ShardsFailed(ScorerError):
    """Shards failed more often than allowed; the finished ones are kept for ``--resume``."""


@dataclass
class Slot:
    """One actor and what the scheduler knows of it."""

    index: int
    actor: Any
    state: str = "starting"  # starting | idle | busy | gone
    since: float = 0.0  # when it (re)entered "starting"
    probing: bool = False  # a ping is outstanding
    next_probe: float = 0.0
    reason: str = ""  # why it is gone


class Scheduler:
    """Gives shards to live actors, retries the shards of dead or failing ones, reports progress.

    Args:
        ray: The ``ray`` module (connected).
        actors: The actors (``ShardWorker``), created with ``max_restarts=-1``.
        refs: The run's input list; a shard is ``refs[shard.start:shard.stop]``.
        parts: Each shard's part file.
        retries: Attempts per shard after the first; only attempts given to a live actor count.
        restart_wait: Seconds an actor may take to start or restart before it is given up.
        progress: Called with ``(done, total, 0)`` as rows are committed.
        clock, sleep: Time, for tests.
    """

    def __init__(self, ray, actors: Sequence[Any], refs: Sequence[ImageRef],
                 parts: dict[int, Path], has_labels: bool, retries: int, restart_wait: float,
                 progress: Callable[[int, int, int], object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.ray, self.refs, self.parts, self.has_labels = ray, refs, parts, has_labels
        self.retries, self.restart_wait, self.progress = retries, restart_wait, progress
        self.clock, self.sleep = clock, sleep
        now = clock()
        self.slots = [Slot(i, actor, since=now) for i, actor in enumerate(actors)]
        self.probes: dict[Any, Slot] = {}  # outstanding pings
        self.done_rows = 0
        self.providers: Counter[str] = Counter()  # what the workers ran on, counted per shard
        self.attempts: Counter[int] = Counter()  # counted attempts per shard index
        self.failed: list[str] = []

    def run(self, todo: list[Shard], finished_rows: int = 0) -> int:
        """Score every shard of ``todo``; returns the number of retried attempts.

        ``finished_rows``: rows of the shards finished before (for the progress figures).

        Raises:
            ShardsFailed: Some shards failed beyond their retries, or no actor is left.
            UnreadableShard: A worker cannot see its shard's images.
        """
        queue: deque[Shard] = deque(todo)
        running: dict[Any, tuple[Slot, Shard]] = {}
        self.done_rows = finished_rows
        try:
            while queue or running:
                self._probe_starting()
                for slot in self.slots:
                    if queue and slot.state == "idle":
                        self._dispatch(slot, queue.popleft(), running)
                if queue and not running and all(s.state == "gone" for s in self.slots):
                    self._no_actor_left(queue)
                    break
                waiting = list(running) + list(self.probes)
                timeout = min(POLL_SECONDS, self._next_event())
                if not waiting:  # only pings due later
                    self.sleep(timeout)
                    continue
                ready, _ = self.ray.wait(waiting, num_returns=1, timeout=timeout)
                for ref in ready:
                    if ref in running:
                        slot, shard = running.pop(ref)
                        self._shard_outcome(ref, slot, shard, queue)
                    else:
                        self._probe_outcome(ref, self.probes.pop(ref))
                self._give_up_late()
                self._report(running)
        finally:
            for slot in self.slots:
                self.ray.kill(slot.actor, no_restart=True)
        if self.failed:
            raise ShardsFailed(f"{len(self.failed)} shards failed (up to {self.retries} retries "
                               "each); the others are kept, run again with --resume: "
                               + "; ".join(self.failed))
        return sum(self.attempts.values())

    def provider_attrs(self) -> dict[str, str]:
        """The output's ``execution_provider`` as the workers ran it (not the driver's CPU), and
        how many shards (scored in this run) ran on each provider."""
        if not self.providers:
            return {}
        names = sorted(self.providers)
        provider = names[0] if len(names) == 1 else "mixed: " + ", ".join(names)
        return {"execution_provider": provider,
                "shard_providers": ", ".join(f"{n}: {self.providers[n]}" for n in names)}

    def _dispatch(self, slot: Slot, shard: Shard, running: dict) -> None:
        ref = slot.actor.score_shard.remote(list(self.refs[shard.start:shard.stop]),
                                            str(self.parts[shard.index]), self.has_labels)
        slot.state = "busy"
        running[ref] = (slot, shard)

    def _shard_outcome(self, ref, slot: Slot, shard: Shard, queue: deque[Shard]) -> None:
        """A shard's call ended: done, or retried (if it has retries left), or failed."""
        exceptions = self.ray.exceptions
        try:
            provider = self.ray.get(ref)
        except exceptions.RayTaskError as error:  # the worker raised: it is alive
            slot.state = "idle"
            cause = getattr(error, "cause", None)
            if isinstance(cause, UnreadableShard):
                raise cause from None
            self._retry(shard, f"{type(cause).__name__ if cause else 'error'}: {cause or error}",
                        queue)
            return
        except (exceptions.RayActorError, exceptions.WorkerCrashedError) as error:
            self._lost(slot, error)
            self._retry(shard, f"its worker died ({type(error).__name__}{death_reason(error)})",
                        queue)
            return
        slot.state = "idle"
        self.done_rows += len(shard)
        if provider:
            self.providers[provider] += 1

    def _retry(self, shard: Shard, error: str, queue: deque[Shard]) -> None:
        if self.attempts[shard.index] < self.retries:
            self.attempts[shard.index] += 1
            queue.appendleft(shard)
        else:
            self.failed.append(f"{self._name(shard)}: {error}")

    def _lost(self, slot: Slot, error: Exception) -> None:
        """The actor died: Ray restarts it (probe it until it is back), unless its constructor
        failed (a restart that cannot succeed: gone)."""
        if getattr(error, "actor_init_failed", False):
            self._gone(slot, f"{type(error).__name__}{death_reason(error)}")
            return
        slot.state, slot.since, slot.next_probe = "starting", self.clock(), 0.0

    def _gone(self, slot: Slot, reason: str) -> None:
        """Give the actor up: no shard goes to it again."""
        slot.state, slot.reason = "gone", reason

    def _probe_starting(self) -> None:
        now = self.clock()
        for slot in self.slots:
            if slot.state == "starting" and not slot.probing and now >= slot.next_probe:
                self.probes[slot.actor.ping.remote()] = slot
                slot.probing = True

    def _probe_outcome(self, ref, slot: Slot) -> None:
        """A ping answered: the actor is back (idle), still restarting (ping again later), or
        cannot start (gone)."""
        slot.probing = False
        if slot.state != "starting":  # given up meanwhile
            return
        exceptions = self.ray.exceptions
        try:
            self.ray.get(ref)
        except exceptions.ActorUnavailableError:  # Ray is still restarting it
            slot.next_probe = self.clock() + PROBE_SECONDS
            return
        except (exceptions.RayActorError, exceptions.WorkerCrashedError) as error:
            if getattr(error, "actor_init_failed", False):
                self._gone(slot, f"{type(error).__name__}{death_reason(error)}")
            else:  # died again while restarting: Ray restarts it again
                slot.next_probe = self.clock() + PROBE_SECONDS
            return
        slot.state = "idle"

    def _give_up_late(self) -> None:
        """Actors not back within ``restart_wait`` seconds are given up."""
        now = self.clock()
        for slot in self.slots:
            if slot.state == "starting" and now - slot.since > self.restart_wait:
                self._gone(slot, f"not started or restarted within {self.restart_wait:g} s")
                self.ray.kill(slot.actor, no_restart=True)

    def _next_event(self) -> float:
        """Seconds until the next probe is due (the wait for results stops then)."""
        due = [s.next_probe for s in self.slots if s.state == "starting" and not s.probing]
        return max(0.01, min(due, default=POLL_SECONDS) - self.clock()) if due else POLL_SECONDS

    def _no_actor_left(self, queue: deque[Shard]) -> None:
        reasons = "; ".join(f"worker {s.index}: {s.reason}" for s in self.slots)
        for shard in queue:
            self.failed.append(f"{self._name(shard)}: no worker left ({reasons})")
        queue.clear()

    def _name(self, shard: Shard) -> str:
        return (f"shard {shard.index} (images {shard.start}-{shard.stop - 1}, first "
                f"{self.refs[shard.start].path})")

    def _report(self, running: dict) -> None:
        if self.progress is None:
            return
        busy = sum(min(len(shard), rows_committed(self.parts[shard.index]))
                   for _, shard in running.values())
        self.progress(min(len(self.refs), self.done_rows + busy), len(self.refs), 0)


def death_reason(error: Exception) -> str:
    """The last line of a dead actor's error that names an exception (a CUDA error in its
    constructor, say), as ``": ..."``; empty when there is none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return f": {named[-1][:300]}" if named else ""


__all__ = ["PROBE_SECONDS", "Scheduler", "ShardsFailed", "death_reason"]
