"""The scheduler against a scripted fake of Ray, on a simulated clock: restarts that take long
(a loaded machine), restarts that never come, constructors that fail, shards that raise.

The fake answers as Ray 2.60 was measured to (see docs/ray.md, *Faults*): a task in flight on an
actor that is killed ends in ``ActorUnavailableError`` after about 2 s; calls to an actor Ray is
restarting end in ``ActorUnavailableError`` (pings after about 2 s, other calls at once); calls to
an actor whose constructor failed end in ``ActorDiedError`` with ``actor_init_failed``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from scorer.distributed.scheduler import Scheduler, ShardsFailed
from scorer.distributed.shards import plan_shards
from scorer.images.listing import ImageRef


class RayActorError(Exception):
    actor_init_failed = False


class ActorUnavailableError(RayActorError):
    pass


class ActorDiedError(RayActorError):
    def __init__(self, message: str, init_failed: bool = False) -> None:
        super().__init__(message)
        self.actor_init_failed = init_failed


class RayTaskError(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class WorkerCrashedError(Exception):
    pass


EXCEPTIONS = SimpleNamespace(RayActorError=RayActorError, ActorUnavailableError=ActorUnavailableError,
                             ActorDiedError=ActorDiedError, RayTaskError=RayTaskError,
                             WorkerCrashedError=WorkerCrashedError)
SHARD_SECONDS = 1.0  # a shard takes this long on a live actor


class Ref:
    def __init__(self, ready_at: float, value=None, error: Exception | None = None) -> None:
        self.ready_at, self.value, self.error = ready_at, value, error


class FakeRay:
    exceptions = EXCEPTIONS

    def __init__(self) -> None:
        self.now = 0.0
        self.killed: list[FakeActor] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, refs, num_returns, timeout):
        assert refs, "wait on nothing"
        ready = [r for r in refs if r.ready_at <= self.now]
        if not ready:
            self.now = min(min(r.ready_at for r in refs), self.now + timeout)
            ready = [r for r in refs if r.ready_at <= self.now]
        return ready[:num_returns], [r for r in refs if r not in ready[:num_returns]]

    def get(self, ref: Ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor, no_restart):
        self.killed.append(actor)


class FakeActor:
    """``script``: what each ``score_shard`` call that reaches a live actor does: "ok", "die"
    (killed mid-shard, then down for ``restart`` seconds; ``None``: never back) or "raise".
    ``init_fails``: every restart's constructor fails."""

    def __init__(self, ray: FakeRay, script=(), restart: float | None = 10.0,
                 init_fails: bool = False) -> None:
        self.ray, self.script, self.restart, self.init_fails = ray, list(script), restart, init_fails
        self.up_at: float | None = 0.0  # when it is up (None: never)
        self.dead = False  # its constructor failed
        self.ran: list[int] = []  # shard rows started on a live actor
        self.refused = 0  # score_shard calls made while it was down
        self.ping = SimpleNamespace(remote=self._ping)
        self.score_shard = SimpleNamespace(remote=self._score)

    def _down(self) -> bool:
        return self.up_at is None or self.ray.now < self.up_at

    def _ping(self) -> Ref:
        now = self.ray.now
        if self.dead:
            return Ref(now, error=ActorDiedError("ValueError: model.onnx is gone", True))
        if self._down():
            return Ref(now + 2.0, error=ActorUnavailableError("restarting"))
        return Ref(now, value="host")

    def _score(self, refs, part, has_labels) -> Ref:
        now = self.ray.now
        if self.dead:
            return Ref(now, error=ActorDiedError("ValueError: model.onnx is gone", True))
        if self._down():
            self.refused += 1
            return Ref(now + 0.001, error=ActorUnavailableError("restarting"))
        self.ran.append(len(refs))
        action = self.script.pop(0) if self.script else "ok"
        if action == "die":
            self.up_at = None if self.restart is None else now + 2.0 + self.restart
            self.dead = self.init_fails
            return Ref(now + 2.0, error=ActorUnavailableError("the actor died unexpectedly"))
        if action == "raise":
            return Ref(now + SHARD_SECONDS, error=RayTaskError(RuntimeError("disk full")))
        return Ref(now + SHARD_SECONDS, value="CPUExecutionProvider")


def run(ray: FakeRay, actors, shards: int = 4, retries: int = 3, restart_wait: float = 300.0):
    refs = [ImageRef(f"{i}.png", Path(f"/images/{i}.png")) for i in range(10 * shards)]
    todo = plan_shards(len(refs), 10)
    parts = {s.index: Path(f"/out.parts/part-{s.index}.h5") for s in todo}
    scheduler = Scheduler(ray, actors, refs, parts, False, retries, restart_wait,
                          clock=ray.clock, sleep=ray.sleep)
    return scheduler, scheduler.run(todo)


def test_a_slow_restart_is_waited_for_and_costs_one_retry():
    ray = FakeRay()
    actor = FakeActor(ray, script=["ok", "die"], restart=60.0)  # a loaded machine: 60 s
    scheduler, retried = run(ray, [actor], retries=1)
    assert retried == 1  # only the attempt that ran and died
    assert actor.refused == 0  # no shard was handed to the restarting actor
    assert actor.ran == [10, 10, 10, 10, 10]  # the dead shard ran again, once
    assert ray.now > 60 and scheduler.provider_attrs()["execution_provider"] == "CPUExecutionProvider"


def test_a_restart_that_never_comes_is_given_up_after_restart_wait():
    ray = FakeRay()
    actor = FakeActor(ray, script=["die"], restart=None)
    with pytest.raises(ShardsFailed) as caught:
        run(ray, [actor], shards=2, restart_wait=30.0)
    message = str(caught.value)
    assert "2 shards failed" in message
    assert "shard 0 (images 0-9, first 0.png): no worker left" in message
    assert "worker 0: not started or restarted within 30 s" in message
    assert 30 < ray.now < 35 and actor in ray.killed and actor.refused == 0


def test_a_restart_whose_constructor_fails_ends_the_run_naming_the_shard():
    ray = FakeRay()
    actor = FakeActor(ray, script=["ok", "die"], restart=5.0, init_fails=True)
    with pytest.raises(ShardsFailed) as caught:
        run(ray, [actor], shards=3)
    message = str(caught.value)
    assert "shard 1 (images 10-19, first 10.png): no worker left" in message
    assert "ActorDiedError: ValueError: model.onnx is gone" in message
    assert "shard 0" not in message  # done before the death
    assert ray.now < 20  # no wait for a restart that cannot succeed


def test_a_dead_actors_shard_goes_to_a_live_one():
    ray = FakeRay()
    dying, live = FakeActor(ray, script=["die"], restart=None), FakeActor(ray)
    scheduler, retried = run(ray, [dying, live], shards=6, restart_wait=1000.0)
    assert retried == 1 and sum(live.ran) == 60 and dying.ran == [10]
    assert ray.now < 10  # the live actor did not wait for the dead one


def test_attempts_that_ran_and_failed_count_against_the_retries():
    ray = FakeRay()
    scheduler, retried = run(ray, [FakeActor(ray, script=["raise"] * 3)], shards=1, retries=3)
    assert retried == 3
    ray = FakeRay()
    with pytest.raises(ShardsFailed, match=r"shard 0 .*: RuntimeError: disk full"):
        run(ray, [FakeActor(ray, script=["raise"] * 4)], shards=1, retries=3)
    ray = FakeRay()  # killed while running, every time: each of those attempts ran
    with pytest.raises(ShardsFailed, match=r"its worker died \(ActorUnavailableError"):
        run(ray, [FakeActor(ray, script=["die"] * 3, restart=1.0)], shards=1, retries=2)


def test_a_first_start_slower_than_restart_wait_is_given_up():
    ray = FakeRay()
    actor = FakeActor(ray)
    actor.up_at = 100.0  # __init__ still running (a cold node)
    with pytest.raises(ShardsFailed, match="not started or restarted within 50 s"):
        run(ray, [actor], shards=1, restart_wait=50.0)
