"""Fleet-scale offline runs on Ray: the same per-frame, per-scene and per-episode code, run by a
pool of Ray workers instead of this process (`rs-guard eval/attack/demo --ray [ADDRESS]`).

Without `--ray` only `LocalWorkers` is used: one Guard in this process, items in order, one
after the other, exactly what the commands did before. With `--ray` (start Ray on this
machine), `--ray auto` (the cluster this machine belongs to) or `--ray ray://host:10001` (a
remote cluster through Ray Client):

* Items (frames, scenes, episodes) are read here, where the recordings are listed, and sent
  to the workers: a worker node needs the model, not the recordings.
* `RayWorkers` keeps a pool of actors, each holding one Guard (the model loads once per
  actor): one GPU per actor where the cluster has GPUs and model.device is auto or cuda,
  else `model.cpu_threads` CPUs (torch is told the same). `RayTasks` runs one Ray task per
  item instead, in a fresh worker process each (closed-loop episodes start their own sim
  and guard processes).
* Order: every item has a sequence number, and a result waits until every earlier one is in,
  so results stream back in input order. At most LOOKAHEAD items per call slot are taken
  beyond the oldest unfinished one, which bounds what the buffer and the object store hold.
* Retries: a worker that dies (its process killed, out of memory, its node gone) fails the
  calls it held that had not returned, and a new actor takes its place. Which of them killed
  it cannot be told when there were several (an actor runs its calls in order, but a call
  that had just finished can lose its reply too), so each of them goes again *alone*: to a
  worker holding no other call, which takes no other call until it returns. A call that
  was alone on a worker that died counts a try; after `retries` tries again it is given up
  on, and its result is `on_failure(item, reason)`, e.g. an abstain row saying why. So a
  frame that kills every worker it reaches fails alone, and the frames that were queued
  with it are decided. An exception raised by the work itself is a bug, not a lost worker:
  it ends the run, as it would in process.

Ray is imported only here, and only once a Ray run starts (`pip install rs_guard_ros[scale]`).
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import itertools
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from . import config

if TYPE_CHECKING:  # type hints only: importing this module must load neither ray nor torch
    from .config import Config
    from .guard import Guard

LOCAL = "local"  # --ray without an address: a Ray instance started here for this run
IN_FLIGHT = 2  # calls queued per actor, so the next item is already there when one ends
LOOKAHEAD = 8  # items taken per call slot beyond the oldest unfinished one
DEFAULT_RETRIES = 2
START_TIMEOUT_S = 900.0  # every actor's model loaded, autoscaled nodes included
# A Ray instance started here for one run: nothing reported to Ray's usage-stats server, and the
# node on the loopback address (found without a routing lookup), so it works offline and
# nothing outside this machine can join it. setdefault: the user's own settings win.
LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

_NONE = object()  # no item
Job = Callable[[Any, Any], Any]  # (guard, item) -> result, run where the guard is
OnFailure = Callable[[Any, str], Any]  # (item, reason) -> the result recorded for an item given up on


def add_ray_arguments(parser: argparse.ArgumentParser, unit: str,
                      workers: str = "one per GPU, else one per model.cpu_threads CPUs of the cluster") -> None:
    """--ray [ADDRESS], --ray-workers and --ray-retries; `unit` names what is distributed and
    `workers` how many workers there are by default."""
    group = parser.add_argument_group("Ray (many machines or GPUs; pip install rs_guard_ros[scale])")
    group.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                       help=f"spread the {unit} over Ray workers: without ADDRESS on a Ray instance started on this "
                            "machine; 'auto' or ray://HOST:10001 for a running cluster (default: in this process)")
    group.add_argument("--ray-workers", type=int, default=None, metavar="N",
                       help=f"Ray workers (default: {workers})")
    group.add_argument("--ray-retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                       help=f"times an item is sent again after its worker died, before it is recorded as failed "
                            f"(default: {DEFAULT_RETRIES})")


@contextlib.contextmanager
def connected(address: str) -> Iterator[None]:
    """This process connected to Ray for the block: a connection it already has is used as it
    is; else `address` (LOCAL: a new instance on this machine, shut down afterwards)."""
    if address == LOCAL:
        for key, value in LOCAL_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        yield
        return
    local = {"include_dashboard": False} if address == LOCAL else {}
    ray.init(address=None if address == LOCAL else address, log_to_driver=False, logging_level=logging.WARNING,
             **local)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass
class RunStats:
    """What a Ray run did besides its results (summary.json's "ray")."""

    workers: int
    resources: dict[str, float]  # per worker
    retried: int = 0  # calls sent again after their worker died
    failed: int = 0  # items given up on (recorded through on_failure)
    replaced: int = 0  # dead actors replaced by new ones

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- in process
class LocalWorkers:
    """Today's path: the one Guard of this process decides every item, in order."""

    in_process = True
    stats: RunStats | None = None

    def __init__(self, guard: Guard) -> None:
        self.guard, self.cfg = guard, guard.cfg

    @property
    def device(self) -> str:
        return str(self.guard.policy.device)

    def map(self, job: Job, items: Iterable[Any], on_failure: OnFailure) -> Iterator[tuple[Any, Any]]:
        """(item, job(guard, item)) for each item; nothing to retry in process."""
        for item in items:
            yield item, job(self.guard, item)


def as_workers(gate: Any) -> LocalWorkers | RayWorkers:
    """Workers for a command: a Guard is run in process, workers are used as they are."""
    return gate if isinstance(gate, (LocalWorkers, RayWorkers)) else LocalWorkers(gate)


# ----------------------------------------------------------------------------- Ray actors
class RayWorkers:
    """A pool of Ray actors, each building its own Guard from `cfg`, for one `map` at a time."""

    in_process = False

    def __init__(self, cfg: Config, count: int | None = None, retries: int = DEFAULT_RETRIES) -> None:
        _check_counts(count, retries)
        self.cfg, self.count, self.retries = cfg, count, retries
        self.device = ""  # the actors' torch devices, once they are up
        self.stats: RunStats | None = None

    def map(self, job: Job, items: Iterable[Any], on_failure: OnFailure) -> Iterator[tuple[Any, Any]]:
        """(item, job(guard, item)) for each item, in order, computed by the actors (none are
        started when there is no item, e.g. a resumed run that is already complete)."""
        import ray

        items = iter(items)
        first = next(items, _NONE)
        if first is _NONE:
            return
        items = itertools.chain([first], items)
        resources = ray.cluster_resources()
        options, actor_cfg = actor_options(self.cfg, resources)
        count = self.count or default_count(options, resources)
        self.stats = RunStats(count, options)
        pool = _ActorPool(actor_cfg, job, options, count, self.stats)
        try:
            self.device = pool.start()
            yield from ordered(pool, items, self.retries, on_failure, self.stats)
        finally:
            pool.close()


def actor_options(cfg: Config, resources: dict[str, float]) -> tuple[dict[str, float], Config]:
    """Ray resources of one Guard actor, and the configuration it builds its Guard from.

    A cluster with GPUs and a model on auto/cuda: one GPU per actor, whose model (and a
    denoiser set to a cuda device) runs on "cuda" (Ray makes the assigned GPU the only visible
    one, so a cuda:1 there does not exist). Else model.cpu_threads CPUs (at least one) and the CPU.
    """
    device = cfg.model.device
    if resources.get("GPU", 0) >= 1 and (device in ("auto", "cuda") or device.startswith("cuda:")):
        on_gpu = {"model.device": "cuda"}
        if cfg.denoiser.device.startswith("cuda"):
            on_gpu["model.denoiser.device"] = "cuda"
        return {"num_cpus": 1, "num_gpus": 1}, config.from_flat(on_gpu, base=cfg)
    cpu_cfg = config.from_flat({"model.device": "cpu"}, base=cfg) if device == "auto" else cfg
    return {"num_cpus": max(1, cfg.model.cpu_threads), "num_gpus": 0}, cpu_cfg


def default_count(options: dict[str, float], resources: dict[str, float]) -> int:
    """As many workers as the cluster holds now: one per GPU, or per `num_cpus` CPUs."""
    kind, need = ("GPU", options["num_gpus"]) if options.get("num_gpus") else ("CPU", options["num_cpus"])
    return max(1, int(resources.get(kind, 0) // need))


def _check_counts(count: int | None, retries: int) -> None:
    if count is not None and count < 1:
        raise ValueError(f"--ray-workers must be >= 1, got {count}")
    if retries < 0:
        raise ValueError(f"--ray-retries must be >= 0, got {retries}")


class GuardActor:
    """One Ray actor: builds a Guard from the configuration once, then runs the job per item."""

    def __init__(self, cfg: Config, job: Job) -> None:
        from .guard import Guard
        from .policies import quiet_model_loading

        quiet_model_loading()
        self.guard, self.job = Guard.from_config(cfg), job

    def device(self) -> str:
        """The model's torch device; answering it means the model has loaded."""
        return str(self.guard.policy.device)

    def run(self, item: Any) -> Any:
        return self.job(self.guard, item)


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(GuardActor)


@dataclass(eq=False)
class _Actor:
    """One actor of the pool and the calls sent to it whose results are not yet taken."""

    handle: Any
    calls: dict[int, tuple[Any, bool]] = field(default_factory=dict)  # seq -> (ObjectRef, sent alone)
    unreturned: list[int] | None = None  # once dead: the calls that did not return

    def takes(self, call: _Call) -> bool:
        """Whether `call` may go to this actor now: a call sent alone needs it idle, and it
        takes nothing else while it holds one."""
        return not any(alone for _, alone in self.calls.values()) and not (call.alone and self.calls)


class _ActorPool:
    """`count` Guard actors; a call goes to the least busy that takes it; a dead actor is replaced."""

    def __init__(self, cfg: Config, job: Job, options: dict[str, float], count: int, stats: RunStats) -> None:
        self.stats = stats
        self._new = functools.partial(_actor_class().options(max_restarts=0, max_task_retries=0, **options).remote,
                                      cfg, job)
        self.actors = [_Actor(self._new()) for _ in range(count)]
        self.capacity = count * IN_FLIGHT

    def start(self) -> str:
        """Wait until every actor's model has loaded; their devices. RuntimeError if one cannot."""
        import ray

        try:
            devices = ray.get([a.handle.device.remote() for a in self.actors], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(f"{len(self.actors)} Ray workers did not start within {START_TIMEOUT_S:.0f} s: the "
                               f"cluster lacks {self.stats.resources} per worker for that many (--ray-workers)"
                               ) from None
        except ray.exceptions.RayError as exc:
            raise RuntimeError(f"a Ray worker could not build the Guard: {lost_reason(exc)}") from None
        return ", ".join(sorted(set(devices)))

    def submit(self, call: _Call) -> tuple[Any, _Actor] | None:
        """Send `call` to the least busy actor that takes it (None: none does now)."""
        actors = [a for a in self.actors if a.takes(call)]
        if not actors:
            return None
        actor = min(actors, key=lambda a: len(a.calls))
        ref = actor.handle.run.remote(call.item)
        actor.calls[call.seq] = (ref, call.alone)
        return ref, actor

    def release(self, actor: _Actor, seq: int) -> None:
        del actor.calls[seq]

    def lost(self, actor: _Actor, seq: int) -> bool:
        """Call `seq` failed because `actor` died (a new actor takes its place at the first of
        its failed calls). True if it was the only call the actor had not returned: it killed it."""
        import ray

        if actor.unreturned is None:
            actor.unreturned = _unreturned(actor.calls)
            ray.kill(actor.handle)
            self.actors[self.actors.index(actor)] = _Actor(self._new())
            self.stats.replaced += 1
        self.release(actor, seq)
        return actor.unreturned == [seq]

    def cancel(self, running: Iterable[Any]) -> None:
        """Nothing to do per call: `close` ends the actors and with them their calls."""

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor.handle)


def _unreturned(calls: dict[int, tuple[Any, bool]]) -> list[int]:
    """The calls of a dead actor that did not return (some may have, their results not yet taken)."""
    import ray

    out = []
    for seq, (ref, _) in calls.items():
        try:
            ray.get(ref, timeout=START_TIMEOUT_S)
        except ray.exceptions.RayError:
            out.append(seq)
    return out


# ----------------------------------------------------------------------------- Ray tasks
class RayTasks:
    """One Ray task per item, each in a fresh worker process (`max_calls=1`)."""

    def __init__(self, count: int | None = None, retries: int = DEFAULT_RETRIES, num_cpus: float = 1) -> None:
        _check_counts(count, retries)
        self.count, self.retries, self.num_cpus = count, retries, num_cpus
        self.stats: RunStats | None = None

    def map(self, fn: Callable[[Any, int], Any], items: Iterable[Any],
            on_failure: OnFailure) -> Iterator[tuple[Any, Any]]:
        """(item, fn(item, attempt)) for each item, in order; `attempt` counts from 0."""
        import ray

        options = {"num_cpus": self.num_cpus}
        count = self.count or default_count(options, ray.cluster_resources())
        self.stats = RunStats(count, options)
        pool = _TaskPool(fn, options, count)
        yield from ordered(pool, items, self.retries, on_failure, self.stats)


@functools.cache
def _task(fn: Callable[[Any, int], Any]) -> Any:
    import ray

    return ray.remote(max_calls=1)(fn)


class _TaskPool:
    """Up to `count` tasks at a time; Ray places them, nothing to replace when one dies."""

    def __init__(self, fn: Callable[[Any, int], Any], options: dict[str, float], count: int) -> None:
        self._remote = _task(fn).options(max_retries=0, **options)
        self.capacity = count

    def submit(self, call: _Call) -> tuple[Any, None]:
        """Every task runs alone in its own process."""
        return self._remote.remote(call.item, call.attempt), None

    def release(self, worker: None, seq: int) -> None:
        pass

    def lost(self, worker: None, seq: int) -> bool:
        """A task runs alone in its process: it killed it."""
        return True

    def cancel(self, running: Iterable[Any]) -> None:
        import ray

        for ref in running:
            ray.cancel(ref, force=True)


# ----------------------------------------------------------------------------- ordered results
@dataclass(order=True)
class _Call:
    """One item on its way: its place in the input, its tries, and where it went."""

    seq: int
    item: Any = field(compare=False)
    attempt: int = field(default=0, compare=False)  # tries that killed their worker
    alone: bool = field(default=False, compare=False)  # it was on a worker that died: sent alone from now on
    worker: Any = field(default=None, compare=False)


def ordered(pool: Any, items: Iterable[Any], retries: int, on_failure: OnFailure,
            stats: RunStats) -> Iterator[tuple[Any, Any]]:
    """(item, result) for every item, in input order, from calls spread over `pool`'s workers.

    Calls whose worker died go again, oldest first and alone; one that killed its worker
    alone counts a try and is given up on after `retries` tries again. The in-flight calls are
    cancelled when the consumer stops early (an error, Ctrl-C).
    """
    stream = _Stream(pool, items, retries, on_failure, stats)
    try:
        while True:
            yield from stream.ready()
            stream.send()
            if not stream.running:
                return
            stream.collect()
    finally:
        pool.cancel(list(stream.running))


class _Stream:
    """The bookkeeping of `ordered`: calls out, calls to send again, results held back for order."""

    def __init__(self, pool: Any, items: Iterable[Any], retries: int, on_failure: OnFailure,
                 stats: RunStats) -> None:
        self.pool, self.retries, self.on_failure, self.stats = pool, retries, on_failure, stats
        self.feed = iter(enumerate(items))
        self.waiting: list[_Call] = []  # to send (again), sorted by seq
        self.running: dict[Any, _Call] = {}  # ObjectRef -> call
        self.done: dict[int, tuple[Any, Any]] = {}  # seq -> (item, result), until every earlier one is out
        self.emitted = self.taken = 0

    def ready(self) -> Iterator[tuple[Any, Any]]:
        """The results that are next in input order."""
        while self.emitted in self.done:
            yield self.done.pop(self.emitted)
            self.emitted += 1

    def send(self) -> None:
        """Fill the workers' free call slots, oldest call first: calls to send again, then new
        items, taken at most LOOKAHEAD per slot beyond the oldest result not yet out."""
        while len(self.running) < self.pool.capacity and (self.waiting or self._take()):
            sent = self.pool.submit(self.waiting[0])
            if sent is None:  # it goes alone and no worker is idle: wait for one
                return
            call = self.waiting.pop(0)
            ref, call.worker = sent
            self.running[ref] = call

    def _take(self) -> bool:
        """Queue the next new item, unless the input is exhausted or too far ahead."""
        if self.taken >= self.emitted + LOOKAHEAD * self.pool.capacity or (item := next(self.feed, None)) is None:
            return False
        self.waiting.append(_Call(*item))
        self.taken += 1
        return True

    def collect(self) -> None:
        """Wait for one call to end: keep its result, or send it again (or give up) if its worker died."""
        import ray

        (ref,), _ = ray.wait(list(self.running), num_returns=1)
        call = self.running.pop(ref)
        try:
            self.done[call.seq] = (call.item, ray.get(ref))
            self.pool.release(call.worker, call.seq)
        except lost_errors() as exc:
            if self.pool.lost(call.worker, call.seq):
                call.attempt += 1
            if call.attempt > self.retries:
                self.stats.failed += 1
                self.done[call.seq] = (call.item, self.on_failure(call.item, lost_reason(exc)))
            else:
                self.stats.retried += 1
                call.alone = True
                bisect.insort(self.waiting, call)
        except ray.exceptions.RayTaskError as exc:  # the work itself raised: as it would in process
            raise exc.cause if isinstance(exc.cause, Exception) else exc


def lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a call whose worker (process, actor or node) is gone."""
    from ray import exceptions as e

    return (e.RayActorError, e.WorkerCrashedError, e.OutOfMemoryError, e.NodeDiedError, e.ObjectLostError,
            e.LocalRayletDiedError)


def lost_reason(exc: BaseException) -> str:
    """One line on why a worker was lost: the error type and Ray's own explanation (for an
    actor whose constructor raised, that exception: the last line of its traceback)."""
    if getattr(exc, "actor_init_failed", False):
        text = [line for line in str(exc).splitlines() if line.strip()][-1]
    else:
        text = " ".join(str(exc).split())
        text = text.split("Worker exit detail:", 1)[-1].strip()
    return f"{type(exc).__name__}: {' '.join(text.split())}"[:300]


__all__ = ["LOCAL", "add_ray_arguments", "connected", "LocalWorkers", "RayWorkers", "RayTasks", "as_workers",
           "actor_options", "default_count", "ordered", "RunStats", "lost_reason"]
