"""The one module of wgrpo that imports ray (the `ray` extra): the actors of a scaled-out run and talking to them.

Owns: joining or starting Ray (`connect`), placing the learner and the R rollout actors (each with a GPU of its
own where the cluster has GPUs and the device is not `cpu`, refused up front when there are too few; no CPU
reserved, so that a 2-core machine runs them all), moving the learner's weights to the workers through the
object store (the learner's arrays are put once per update, and each node fetches one copy however many workers
it holds), restarting a rollout actor that died once (it reloads the model and the current weights, then samples
its shard again: the same completions; a death Ray noticed between two calls counts too), scoring code-task
completions as one-CPU Ray tasks, and turning Ray's errors into wgrpo's: an error raised inside an actor, its
constructor included, comes back as itself (an InputError stays one), a lost actor or object as a `ClusterError`
naming it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

try:
    import ray
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("--rollout-workers needs Ray: pip install 'wgrpo[ray]'") from error

from wgrpo.engine import InputError, is_hub_id
from wgrpo.rl.cluster.roles import LearnerProcess, RolloutWorker, StaleWeights
from wgrpo.rl.errors import ClusterError

RESTARTS = 1  # times a dead rollout actor is restarted before the run stops
START_WAIT_S = 900.0  # how long an actor may take to be placed and to load its model
LOST = (RayActorError, ActorUnavailableError, StaleWeights)  # what a dead (or restarted) worker's call raises


def connect(address: str = "") -> None:
    """Join the Ray cluster at `address` ("auto": the one `ray start` runs on this machine), or start a local
    one for this run (never joining another by accident, a stale one a killed run left included); nothing when
    this process is connected already (a test's, a notebook's `ray.init`)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=True)


def _gpus_per_actor(device_spec: str | None, actors: int) -> float:
    """1 where the cluster has GPUs and the device may be one; 0 on CPU-only clusters and for `cpu`. A cluster
    with fewer GPUs than actors is refused: the actors left over would wait for one forever."""
    if (device_spec or "").strip().lower() == "cpu":
        return 0.0
    gpus = ray.cluster_resources().get("GPU", 0)
    if not gpus:
        return 0.0
    if gpus < actors:
        fewer = (f"give --rollout-workers {int(gpus) - 1} or fewer" if gpus >= 2 else
                 "train in one process (no --rollout-workers)")
        raise InputError(f"--rollout-workers {actors - 1}: the learner and {actors - 1} rollout worker(s) take a "
                         f"GPU each, and the Ray cluster has {gpus:g}; {fewer}, or use --device cpu")
    return 1.0


def _reason(error: BaseException) -> str:
    """The line of a Ray error that says what happened (its message, not the traceback around it)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "died" in line or "Error" in line or "error" in line:
            return line[:300]
    return lines[0][:300] if lines else type(error).__name__


def get(ref, timeout: float | None = None):
    """`ray.get`, with an actor's or task's own exception re-raised as itself, and Ray's own failures (an object
    or node lost, a task killed for memory) as a ClusterError. A lost actor's error is left to the caller."""
    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as error:
        raise (error.cause if error.cause is not None else ClusterError(_reason(error))) from None
    except (RayActorError, ActorUnavailableError, GetTimeoutError):
        raise
    except RayError as error:
        raise ClusterError(f"Ray lost part of the run: {_reason(error)}") from None


def _waited(ref, who: str, timeout: float | None = None, what: str = "run"):
    """`get`, with a lost actor (or one not placed in time) as a ClusterError naming `who`."""
    try:
        return get(ref, timeout=timeout)
    except GetTimeoutError:
        raise ClusterError(f"{who} did not {what} within {timeout:.0f} s (placed? see `ray status`)") from None
    except (RayActorError, ActorUnavailableError) as error:
        raise ClusterError(f"{who} died ({_reason(error)})") from None


@dataclass
class SyncStats:
    """Weight movement of one sampling round: bytes the workers wrote and the seconds it took in all."""
    bytes: float = 0.0
    seconds: float = 0.0


class _Guarded:
    """An actor whose constructor's exception is kept and raised by its first call (`describe`), so that the
    driver gets the exception itself rather than Ray's 'the actor died in its creation task'."""

    def _build(self, build) -> None:
        self._failed = None
        try:
            build()
        except Exception as error:  # noqa: BLE001 - handed to the driver as itself by describe()
            self._failed = error

    def describe(self) -> dict:
        if self._failed is not None:
            raise self._failed
        return super().describe()


class _LearnerActor(_Guarded, LearnerProcess):
    """The learner on the GPU Ray gave this process (none on a CPU-only cluster)."""

    def __init__(self, *args):
        self._build(lambda: LearnerProcess.__init__(self, *args, gpu_ids=tuple(ray.get_gpu_ids())))


class _WorkerActor(_Guarded, RolloutWorker):
    """A rollout worker on the GPU Ray gave this process (none on a CPU-only cluster)."""

    def __init__(self, *args):
        self._build(lambda: RolloutWorker.__init__(self, *args, gpu_ids=tuple(ray.get_gpu_ids())))


class Cluster:
    """The learner actor and the rollout actors of a run, and the weights each worker holds. The learner loads
    `checkpoint` (the starting one, or the one resumed); the workers load `start`, the run's starting checkpoint
    (or `checkpoint` when it is gone), and then the learner's weights."""

    def __init__(self, config, checkpoint: str, start: str, workers: int, device_spec: str | None):
        gpus = _gpus_per_actor(device_spec, workers + 1)
        # a start the driver resolved from a Hub id is resolved again on each node (`roles.on_this_node`)
        hub = config.model and is_hub_id(config.model)
        self.worker_source = start if hub or os.path.isdir(start) else checkpoint
        self.workers, self.restarts, self.worker_versions, self.pids = [], [0] * workers, [-1] * workers, []
        self._weights: tuple[int, object] | None = None  # (version, ObjectRef of the learner's arrays)
        self._task_refs: dict[int, object] = {}
        learner_actor = ray.remote(num_cpus=0, num_gpus=gpus, max_restarts=0)(_LearnerActor)
        worker_actor = ray.remote(num_cpus=0, num_gpus=gpus, max_restarts=RESTARTS, max_task_retries=0)(_WorkerActor)
        self.learner = learner_actor.remote(config, checkpoint, start, device_spec)
        try:
            self.workers = [worker_actor.remote(config, self.worker_source, device_spec) for _ in range(workers)]
            self.learner_info = self.wait_learner(self.learner.describe.remote(), timeout=START_WAIT_S,
                                                  what="start")
            for index, worker in enumerate(self.workers):  # each loads its model now: errors before any step
                self.pids.append(_waited(worker.describe.remote(), f"rollout worker {index}", START_WAIT_S,
                                         "start")["pid"])
        except BaseException:
            self.shutdown()
            raise

    # ------------------------------------------------------------------ the learner

    def call_learner(self, method: str, *args, **kwargs):
        """The learner's `method`, waited for."""
        return self.wait_learner(self.submit_learner(method, *args, **kwargs))

    def submit_learner(self, method: str, *args, **kwargs):
        return getattr(self.learner, method).remote(*args, **kwargs)

    def wait_learner(self, ref, timeout: float | None = None, what: str = "run"):
        return _waited(ref, "the learner actor", timeout, what)

    # ------------------------------------------------------------------ weights

    def weights(self, version: int):
        """The ObjectRef of the learner's trainable weights after `version` updates (read once per version).
        Called before the learner's next update is submitted, so the actor's order makes it that version's."""
        if self._weights is None or self._weights[0] != version:
            self._weights = (version, self.learner.trainable_weights.remote())
        return self._weights[1]

    def sync(self, indices, version: int) -> SyncStats:
        """Bring workers `indices` to the weights of `version` (those that hold them already are skipped)."""
        stats = SyncStats()
        pending = [(i, self._submit_load(i, version)) for i in indices if self.worker_versions[i] != version]
        began = time.perf_counter()
        for index, ref in pending:
            stats.bytes += self._loaded(index, ref, version)
        stats.seconds = time.perf_counter() - began
        return stats

    def _submit_load(self, index: int, version: int):
        self.worker_versions[index] = -1  # until the load is seen done
        return self.workers[index].load_weights.remote(self.weights(version), version)

    def _loaded(self, index: int, ref, version: int) -> float:
        """Wait for a worker's load of `version`; a worker lost meanwhile is restarted and loads again. Returns
        the bytes written."""
        while True:
            try:
                result = get(ref)
            except LOST as error:
                self._restarted(index, error)
                ref = self._submit_load(index, version)
                continue
            self._same_process(index, result["pid"])
            self.worker_versions[index] = version
            return result["bytes"]

    # ------------------------------------------------------------------ sampling

    def sample(self, shards: list[tuple[int, int]], prompts: list, group_size: int, *, use_learner: bool,
               version: int, options: dict) -> tuple[list[list], list[int]]:
        """(every shard's completions, the weight version each non-empty shard came back with): shard 0 on the
        learner when `use_learner` (always at its current weights, `version`: it samples between its updates),
        the others (or all) on the workers at the weights of `version`; an empty shard asks nothing. A worker
        that dies (or was restarted since its load) is restarted once, loads the weights again and samples its
        shard again."""
        worker_shards = shards[1:] if use_learner else shards
        refs = []
        if use_learner and shards[0][1] > shards[0][0]:
            a, b = shards[0]
            refs.append(("learner", self.learner.sample.remote(prompts[a:b], group_size,
                                                               first_sequence=a * group_size, **options)))
        elif use_learner:
            refs.append(("learner", None))
        for index, (a, b) in enumerate(worker_shards):
            refs.append((index, None if a == b else self._submit_sample(index, prompts, a, b, group_size, version,
                                                                        options)))
        results, versions = [], []
        for who, ref in refs:
            if ref is None:
                results.append([])
            elif who == "learner":
                results.append(self.wait_learner(ref))
                versions.append(version)
            else:
                sampled = self._sampled(who, ref, worker_shards[who], prompts, group_size, version, options)
                results.append(sampled["sequences"])
                versions.append(sampled["version"])
        return results, versions

    def _sampled(self, index, ref, shard, prompts, group_size, version, options) -> dict:
        while True:
            try:
                return get(ref)
            except LOST as error:
                self._restarted(index, error)
                self._loaded(index, self._submit_load(index, version), version)
                ref = self._submit_sample(index, prompts, *shard, group_size, version, options)

    def _submit_sample(self, index, prompts, a, b, group_size, version, options):
        return self.workers[index].sample.remote(prompts[a:b], group_size, first_sequence=a * group_size,
                                                 version=version, **options)

    # ------------------------------------------------------------------ restarts

    def _count_restart(self, index: int, why: str) -> None:
        if self.restarts[index] >= RESTARTS:
            raise ClusterError(f"rollout worker {index} died again after its restart ({why})")
        self.restarts[index] += 1
        print(f"wgrpo: rollout worker {index} died ({why}); restarting it", flush=True)

    def _same_process(self, index: int, pid: int) -> None:
        """Count a restart Ray made between two calls (the worker answers from another process)."""
        if pid != self.pids[index]:
            self._count_restart(index, f"pid {self.pids[index]} is gone, pid {pid} answers")
            self.pids[index] = pid

    def _restarted(self, index: int, error: BaseException) -> None:
        """Count a worker's death and wait for Ray to restart it; a ClusterError when it has no restart left. A
        worker that was only unreachable for a while (the same process answers again) is not counted; either way
        it loads the weights again before it samples."""
        self.worker_versions[index] = -1
        transient = isinstance(error, ActorUnavailableError)
        if not transient:
            self._count_restart(index, "restarted by Ray since it loaded the weights"
                                if isinstance(error, StaleWeights) else _reason(error))
        deadline = time.monotonic() + START_WAIT_S
        while True:
            try:
                pid = get(self.workers[index].describe.remote(), timeout=START_WAIT_S)["pid"]
                if transient:
                    self._same_process(index, pid)  # counted only if another process answers
                self.pids[index] = pid
                return
            except (ActorUnavailableError, GetTimeoutError):
                if time.monotonic() > deadline:
                    raise ClusterError(f"rollout worker {index} did not come back within {START_WAIT_S:.0f} s "
                                       f"of its restart") from None
                time.sleep(0.5)
            except RayActorError as again:
                raise ClusterError(f"rollout worker {index} could not be restarted ({_reason(again)})") from None
            except Exception as failed:  # noqa: BLE001 - its constructor's own error, raised by describe()
                raise ClusterError(f"rollout worker {index} could not be restarted: {failed}") from None

    # ------------------------------------------------------------------ the rest

    def task_ref(self, task):
        """The object-store copy of `task` for reward tasks, put once."""
        if id(task) not in self._task_refs:
            self._task_refs[id(task)] = ray.put(task)
        return self._task_refs[id(task)]

    def shutdown(self) -> None:
        for actor in [getattr(self, "learner", None), *self.workers]:
            if actor is None:
                continue
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - an actor already gone is what shutting down wants
                pass


def score_as_tasks(task, completions, problems, weights, task_ref=None) -> list:
    """Each completion's (reward, parts) from `task.reward` (its problem `problems[c.problem_index]`), one
    one-CPU Ray task per completion: a code task's test runs spread over the cluster's cores. `task_ref`: the
    task already in the object store."""
    task_ref = ray.put(task) if task_ref is None else task_ref
    refs = [_score_one.remote(task_ref, c.text, problems[c.problem_index], weights) for c in completions]
    return [get(ref) for ref in refs]


@ray.remote(num_cpus=1)
def _score_one(task, text, problem, weights):
    return task.reward(text, problem, weights)
