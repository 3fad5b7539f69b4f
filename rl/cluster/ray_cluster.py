"""The one module of wgrpo that imports ray (the `ray` extra): the actors of a scaled-out run and talking to them.

Owns: joining or starting Ray (`connect`), placing the learner and the R rollout actors (each with a GPU of its
own where the cluster has GPUs and the device is not `cpu`; no CPU reserved, so that a 2-core machine runs
them all), moving the learner's weights to the workers through the object store (the learner's arrays are
put once per update, and each node fetches one copy however many workers it holds), restarting a rollout
actor that died once (it reloads the model and the current weights, then samples its shard again: the same
completions), scoring code-task completions as one-CPU Ray tasks, and turning Ray's errors into wgrpo's:
an error raised inside an actor comes back as itself (an InputError stays one), a lost actor as a
`ClusterError` naming it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

try:
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("--rollout-workers needs Ray: pip install 'wgrpo[ray]'") from error

from wgrpo.rl.cluster.roles import LearnerProcess, RolloutWorker
from wgrpo.rl.errors import ClusterError

RESTARTS = 1  # times a dead rollout actor is restarted before the run stops
RESTART_WAIT_S = 120.0  # how long a restarting actor may take to load its model


def connect(address: str = "") -> None:
    """Join the Ray cluster at `address` ("auto": the one `ray start` runs on this machine), or start a local
    one; nothing when this process is connected already (a test's, a notebook's `ray.init`)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)


def _gpus_per_actor(device_spec: str | None) -> float:
    """1 where the cluster has GPUs and the device may be one; 0 on CPU-only clusters and for `cpu`."""
    if (device_spec or os.environ.get("WGRPO_DEVICE", "")).strip().lower() == "cpu":
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _cause(error: Exception) -> Exception:
    """The exception raised inside an actor or task, as itself."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        return error.cause
    return error


def get(ref):
    """`ray.get`, with an actor's own exception re-raised as itself."""
    try:
        return ray.get(ref)
    except RayTaskError as error:
        raise _cause(error) from None


@dataclass
class SyncStats:
    """Weight movement of one sampling round: bytes each worker wrote and the seconds it took in all."""
    bytes: float = 0.0
    seconds: float = 0.0
    versions: list[int] = field(default_factory=list)


class Cluster:
    """The learner actor and the rollout actors of a run, and the weights each worker holds."""

    def __init__(self, config, checkpoint: str, start: str, workers: int, device_spec: str | None):
        gpus = _gpus_per_actor(device_spec)
        self.config, self.checkpoint, self.device_spec = config, checkpoint, device_spec
        learner_actor = ray.remote(num_cpus=0, num_gpus=gpus, max_restarts=0)(_LearnerActor)
        self._worker_actor = ray.remote(num_cpus=0, num_gpus=gpus, max_restarts=RESTARTS,
                                        max_task_retries=0)(_WorkerActor)
        self.learner = learner_actor.remote(config, checkpoint, start, device_spec)
        self.workers = [self._start_worker(index) for index in range(workers)]
        self.restarts = [0] * workers
        self.worker_versions = [-1] * workers
        self._weights: tuple[int, object] | None = None  # (version, ObjectRef of the learner's arrays)
        self.learner_info = self.call_learner("describe")
        for index, worker in enumerate(self.workers):  # each loads its model now: errors before any step
            self._worker_call(index, worker.describe.remote())

    def _start_worker(self, index: int):
        return self._worker_actor.remote(self.config, self.checkpoint, self.device_spec)

    # ------------------------------------------------------------------ the learner

    def call_learner(self, method: str, *args, **kwargs):
        """The learner's `method`, waited for."""
        return self.wait_learner(self.submit_learner(method, *args, **kwargs))

    def submit_learner(self, method: str, *args, **kwargs):
        return getattr(self.learner, method).remote(*args, **kwargs)

    def wait_learner(self, ref):
        try:
            return get(ref)
        except RayActorError as error:
            raise ClusterError(f"the learner actor died ({_reason(error)})") from None

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
        pending = [(i, self.workers[i].load_weights.remote(self.weights(version), version))
                   for i in indices if self.worker_versions[i] != version]
        began = time.perf_counter()
        for index, ref in pending:
            result = self._worker_call(index, ref, version=version)
            if result is not None:
                stats.bytes += result["bytes"]
            self.worker_versions[index] = version
        stats.seconds = time.perf_counter() - began
        stats.versions = [version] * len(pending)
        return stats

    # ------------------------------------------------------------------ sampling

    def sample(self, shards: list[tuple[int, int]], prompts: list, group_size: int, *, use_learner: bool,
               version: int, options: dict) -> list[list]:
        """Every shard's completions: shard 0 on the learner when `use_learner`, the others (or all) on the
        workers, each at the weights of `version`. A worker that dies is restarted once and samples again."""
        worker_shards = shards[1:] if use_learner else shards
        refs = []
        if use_learner:
            a, b = shards[0]
            refs.append(("learner", self.learner.sample.remote(prompts[a:b], group_size,
                                                               first_sequence=a * group_size, **options)))
        for index, (a, b) in enumerate(worker_shards):
            empty = a == b  # more samplers than problems: nothing to ask for
            refs.append((index, None if empty else self._submit_sample(index, prompts, a, b, group_size, version,
                                                                        options)))
        results = []
        for who, ref in refs:
            if ref is None:
                results.append([])
                continue
            if who == "learner":
                results.append(self.wait_learner(ref))
                continue
            attempt = ref
            while True:
                try:
                    results.append(get(attempt))
                    break
                except (RayActorError, ActorUnavailableError) as error:
                    self._restarted(who, error)
                    self.sync([who], version)
                    a, b = worker_shards[who]
                    attempt = self._submit_sample(who, prompts, a, b, group_size, version, options)
        return results

    def _submit_sample(self, index, prompts, a, b, group_size, version, options):
        return self.workers[index].sample.remote(prompts[a:b], group_size, first_sequence=a * group_size,
                                                 version=version, **options)

    def _worker_call(self, index: int, ref, version: int | None = None):
        """Wait for a worker's call; a worker that died is restarted (once) and, given `version`, reloaded."""
        while True:
            try:
                return get(ref)
            except (RayActorError, ActorUnavailableError) as error:
                self._restarted(index, error)
                if version is None:
                    ref = self.workers[index].describe.remote()
                else:
                    self.worker_versions[index] = -1
                    ref = self.workers[index].load_weights.remote(self.weights(version), version)

    def _restarted(self, index: int, error: Exception) -> None:
        """Count a worker's death and wait for Ray to restart it; a ClusterError when it has no restart left."""
        self.worker_versions[index] = -1
        if self.restarts[index] >= RESTARTS:
            raise ClusterError(f"rollout worker {index} died again after its restart ({_reason(error)})") from None
        self.restarts[index] += 1
        print(f"wgrpo: rollout worker {index} died ({_reason(error)}); restarting it", flush=True)
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                ray.get(self.workers[index].describe.remote(), timeout=RESTART_WAIT_S)
                return
            except (ActorUnavailableError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise ClusterError(f"rollout worker {index} did not come back within {RESTART_WAIT_S:.0f} s "
                                       f"of its restart") from None
                time.sleep(0.5)
            except RayActorError as again:
                raise ClusterError(f"rollout worker {index} could not be restarted ({_reason(again)})") from None

    def shutdown(self) -> None:
        for actor in [self.learner, *self.workers]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - an actor already gone is what shutting down wants
                pass


def score_as_tasks(task, completions, problems, weights) -> list:
    """Each completion's (reward, parts) from `task.reward` (its problem `problems[c.problem_index]`), one
    one-CPU Ray task per completion: a code task's test runs spread over the cluster's cores."""
    task_ref = ray.put(task)
    refs = [_score_one.remote(task_ref, c.text, problems[c.problem_index], weights) for c in completions]
    return [get(ref) for ref in refs]


@ray.remote(num_cpus=1)
def _score_one(task, text, problem, weights):
    return task.reward(text, problem, weights)


class _LearnerActor(LearnerProcess):
    """The learner on the GPU Ray gave this process (none on a CPU-only cluster)."""

    def __init__(self, *args):
        super().__init__(*args, gpu_ids=tuple(ray.get_gpu_ids()))


class _WorkerActor(RolloutWorker):
    """A rollout worker on the GPU Ray gave this process (none on a CPU-only cluster)."""

    def __init__(self, *args):
        super().__init__(*args, gpu_ids=tuple(ray.get_gpu_ids()))


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
