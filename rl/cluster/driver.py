"""The driver of a scaled-out GRPO run (`wgrpo train --rollout-workers R`): the single-process loop, with the
policy in a learner actor and sampling spread over it and R rollout actors.

Owns `ClusterLoop`, a `rl.train.trainer.GRPOLoop` whose learner is remote: the driver keeps the config, the data
order, the seeds, the rewards and advantages' inputs, the metrics, the callbacks and when to save; the learner
actor updates and writes the checkpoints (into output_dir, which multi-node runs put on a shared filesystem).
Each sampling round is cut into whole groups (`rl.cluster.shards`), every shard keyed by its global sequence
indices and padded to the round's longest prompt, so the completions are those one process samples.

Schedules:
- synchronous (default): the learner and the R workers sample step t with the weights of update t, then the
  learner updates. Metrics and final weights are those of the single-process run for the same seed on the same
  kind of adapter.
- `async_rollouts = 1`: while the learner runs update t, the workers sample step t + 1 with the weights before
  it (one step off-policy; the first step is sampled on-policy); deterministic for a seed. The learner then samples
  nothing. Each shard comes back with the version (updates done) of the weights that sampled it, logged as
  `sampling/weight_version`, and `sampling/staleness` is the step trained minus that version.

Weights reach the workers through the object store once per update (`time/weight_sync`, `weight_sync/bytes`).
A rollout actor that dies is restarted once and samples its shard again; a run that cannot go on (a worker
lost twice, the learner lost) stops with a `ClusterError` naming the actor and the checkpoint to resume from
(saved then if the learner is alive). Talks to Ray only through `rl.cluster.ray_cluster`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from wgrpo.engine import InputError
from wgrpo.rl.cluster.shards import shard_ranges
from wgrpo.rl.errors import ClusterError
from wgrpo.rl.rollout import Rollout, completions_of, longest_prompt, score_completions
from wgrpo.rl.train.evaluate import evaluate
from wgrpo.rl.train.trainer import GRPOLoop


class RemoteLearner:
    """The learner actor behind `rl.train.learner.Learner`'s interface, each call waited for."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.model_config = cluster.learner_info["model_config"]
        self.pad_id = cluster.learner_info["pad_id"]

    def check_memory(self, longest_prompt: int):
        return self.cluster.call_learner("check_memory", longest_prompt)

    def update(self, rollout, step: int, on_policy: bool = True) -> dict[str, float]:
        return self.cluster.call_learner("update", rollout, step, on_policy)

    def save(self, path, state: dict) -> Path:
        return Path(self.cluster.call_learner("save", str(path), state))

    def load_optimizer(self, optimizer_state, checkpoint: str) -> None:
        self.cluster.call_learner("load_optimizer", checkpoint)

    def peak_metrics(self) -> dict[str, float]:
        return self.cluster.call_learner("peak_metrics")

    def reset_peak(self) -> None:
        self.cluster.call_learner("reset_peak")


class ClusterLoop(GRPOLoop):
    """GRPOLoop over a `rl.cluster.ray_cluster.Cluster`; see the module docstring. `sampled_ahead`: the record
    of a resumed asynchronous run's batch sampled ahead (`rl.cluster.ahead`), trained on first."""

    def __init__(self, config, tokenizer, task, cluster, sampled_ahead: dict | None = None, **options):
        self.cluster = cluster
        self.asynchronous = config.async_rollouts > 0
        self.prefetched = None  # (step, StepSample, its metrics) sampled ahead by the async schedule
        self._extras: dict[str, float] = {}
        self._lost: ClusterError | None = None  # an actor lost where the step could still finish: stop after it
        super().__init__(config, None, tokenizer, task, learner=RemoteLearner(cluster), **options)
        if sampled_ahead is not None and self.asynchronous:
            from wgrpo.rl.cluster.ahead import from_record

            step, sample, metrics = from_record(sampled_ahead)
            if step == self.step:
                self.prefetched = (step, sample, metrics)

    # ------------------------------------------------------------------ sampling

    def sample_round(self, problems: list, seed: int, *, group_size: int | None = None,
                     temperature: float | None = None, weights=None, top_k: int | None = None,
                     top_p: float | None = None) -> Rollout:
        """group_size completions of each of `problems`, sampled across the actors, scored here."""
        cfg = self.config
        size = cfg.group_size if group_size is None else group_size
        prompts = [p.prompt for p in problems]
        options = {"prompt_width": longest_prompt(self.tokenizer, prompts), "seed": seed,
                   "temperature": cfg.temperature if temperature is None else temperature,
                   "top_k": cfg.top_k if top_k is None else top_k, "top_p": cfg.top_p if top_p is None else top_p,
                   "stop": list(self.task.stop_strings), "max_new_tokens": cfg.max_new_tokens,
                   "generation_batch_size": cfg.generation_chunk_size if size == cfg.group_size else 0}
        use_learner = not self.asynchronous
        workers = len(self.cluster.workers)
        shards = shard_ranges(len(problems), workers + use_learner)  # the learner's, first, is the smallest
        began = time.perf_counter()
        worker_shards = shards[1:] if use_learner else shards
        sync = self.cluster.sync([i for i, (a, b) in enumerate(worker_shards) if b > a], self.step)
        self._extras["time/weight_sync"] = self._extras.get("time/weight_sync", 0.0) + sync.seconds
        self._extras["weight_sync/bytes"] = self._extras.get("weight_sync/bytes", 0.0) + sync.bytes
        results, versions = self.cluster.sample(shards, prompts, size, use_learner=use_learner, version=self.step,
                                                options=options)
        if versions and self.asynchronous:  # the oldest weights any shard sampled with (all the same, by design)
            old = self._extras.get("sampling/weight_version", min(versions))
            self._extras["sampling/weight_version"] = float(min(old, *versions))
        completions = [c for (a, _), sequences in zip(shards, results) for c in completions_of(sequences, a * size,
                                                                                             size)]
        generated = time.perf_counter()
        self._score(completions, problems, self.weights if weights is None else weights)
        return Rollout(completions, size, generated - began - sync.seconds, time.perf_counter() - generated)

    def _score(self, completions, problems, weights) -> None:
        from wgrpo.rl.tasks.code import CodeTask

        if isinstance(self.task, CodeTask):  # each test run a one-CPU Ray task, anywhere in the cluster
            from wgrpo.rl.cluster.ray_cluster import score_as_tasks

            scores = score_as_tasks(self.task, completions, problems, weights, self.cluster.task_ref(self.task))
            for completion, (reward, parts) in zip(completions, scores, strict=True):
                completion.reward, completion.parts = reward, parts
            return
        score_completions(self.task, completions, problems, weights)

    def sample_step(self, step: int):
        if self._lost is not None:
            raise self._lost
        if self.prefetched is not None and self.prefetched[0] == step:
            _, sample, extras = self.prefetched
            self.prefetched = None
            self._extras.update(extras)
        else:
            sample = super().sample_step(step)
        if self.asynchronous:  # updates between the weights that sampled the batch and those it trains
            version = self._extras.setdefault("sampling/weight_version", float(step - 1))  # older records: one behind
            self._extras["sampling/staleness"] = step - version
        return sample

    # ------------------------------------------------------------------ update and the rest

    def update(self, rollout) -> dict[str, float]:
        if not self.asynchronous:
            return super().update(rollout)
        ahead = self.step + 1 < self.config.steps
        if ahead:  # asked for before the update changes them: the next step samples with them
            self.cluster.weights(self.step)
        on_policy = self._extras.get("sampling/staleness", 0.0) == 0.0
        update = self.cluster.submit_learner("update", rollout, self.step, on_policy)
        if ahead:
            this_step, self._extras = self._extras, {}  # the next step's sampling has metrics of its own
            try:
                sample = super().sample_step(self.step + 1)
                self.prefetched = (self.step + 1, sample, self._extras)
            except ClusterError as error:  # the update in flight still lands, and this step ends with it
                self._lost = error
            self._extras = this_step
        return self.cluster.wait_learner(update)

    def finish_step(self, sample) -> dict[str, float]:
        metrics = super().finish_step(sample)
        metrics.update(self._extras)
        self._extras = {}
        return metrics

    def evaluate(self) -> dict[str, float]:
        cfg = self.config

        def greedy(chunk, weights):
            return self.sample_round(chunk, 0, group_size=1, temperature=0.0, weights=weights, top_k=0, top_p=1.0)

        step_extras, self._extras = self._extras, {}  # an evaluation's weight sync is not the step's
        try:
            result = evaluate(None, self.tokenizer, self.task, problems=cfg.eval_problems,
                              max_new_tokens=cfg.max_new_tokens, batch_size=cfg.per_device_eval_batch_size,
                              weights=self.weights, sample=greedy)
        except ClusterError as error:  # the step's row is still written, without its evaluation; then stop
            self._lost = error
            return {}
        finally:
            self._extras = step_extras
        return result.as_metrics()

    def state_for_save(self) -> dict:
        """With the batch an asynchronous run sampled ahead for the next step, so a resume trains on it."""
        state = super().state_for_save()
        if self.prefetched is not None and self.prefetched[0] == self.step:
            from wgrpo.rl.cluster.ahead import to_record

            state["sampled_ahead"] = to_record(*self.prefetched)
        return state

    def run(self) -> list[dict]:
        try:
            history = super().run()
        except ClusterError as error:
            raise ClusterError(f"{error}; {self._keep_progress()}") from None
        if self._lost is not None:  # lost in the final evaluation, after the last step and its checkpoint
            print(f"wgrpo: the final evaluation was not done: {self._lost}", file=sys.stderr)
        return history

    def _keep_progress(self) -> str:
        """Save the step reached when the learner is still there; say which checkpoint to resume from."""
        path = self.output / f"checkpoint-{self.step}"
        if not path.exists():
            try:
                self.save(path)
            except Exception as error:  # noqa: BLE001 - the run is stopping for the error being reported
                print(f"wgrpo: could not save {path}: {error}", file=sys.stderr)
        if not path.exists():
            found = sorted((int(p.name.rpartition("-")[2]), p) for p in self.output.glob("checkpoint-*")
                           if p.name.rpartition("-")[2].isdigit())
            if not found:
                return "no checkpoint was written; the run must start again"
            path = found[-1][1]
        return f"resume with: {self.resume_hint(path)}"


def train_on_cluster(config, task, start: str, device=None) -> tuple[list[dict], ClusterLoop]:
    """Run `config` (a TrainConfig with rollout_workers) on Ray from the starting checkpoint `start` (or
    `config.resume`); returns (the evaluations, the loop)."""
    with cluster_loop(config, task, start, device) as loop:
        return loop.run(), loop


@contextlib.contextmanager
def cluster_loop(config, task, start: str, device=None, callbacks=()):
    """The `ClusterLoop` of `config` over new actors (Ray joined or started as `config.ray_address` says), ready to
    `run()`; the actors are stopped when the block ends. `device`: a Device or a `--device` spec, which the actors
    read as the backend or kind of adapter to use (each takes the GPU Ray gives it)."""
    from wgrpo.engine import load_tokenizer
    from wgrpo.rl.cluster import ray_cluster
    from wgrpo.rl.train.checkpoint import read_state

    checkpoint = config.resume or start
    tokenizer = load_tokenizer(checkpoint)
    state = read_state(config.resume) if config.resume else {}
    ray_cluster.connect(config.ray_address)
    cluster = None
    try:
        cluster = ray_cluster.Cluster(config, checkpoint, start, config.rollout_workers, actor_device_spec(device))
        info = cluster.learner_info
        print(f"wgrpo: learner on {info['device']}; {len(cluster.workers)} rollout worker(s); "
              f"{'asynchronous' if config.async_rollouts else 'synchronous'} schedule", file=sys.stderr)
        loop = ClusterLoop(config, tokenizer, task, cluster, sampled_ahead=state.get("sampled_ahead"),
                           start_step=state.get("step", 0), start_model=start,
                           log_history=state.get("log_history", ()), callbacks=callbacks)
        check_shared_output(cluster, loop.output)
        if config.resume:
            loop.learner.load_optimizer(None, config.resume)
        yield loop
    finally:
        if cluster is not None:
            cluster.shutdown()


def actor_device_spec(device) -> str | None:
    """What the actors are told of the device: a spec as given (an adapter index means nothing on other
    machines, and Ray picks each actor's GPU: it is dropped), the backend of a Device, else $WGRPO_DEVICE."""
    from wgrpo.engine import DEVICE_ENV_VAR

    if device is None:
        device = os.environ.get(DEVICE_ENV_VAR) or None
    if device is None or isinstance(device, str):
        return None if device is None or device.strip().isdigit() else device
    if device.is_software:
        return "cpu"
    return {"Vulkan": "vulkan", "Metal": "metal", "D3D12": "dx12", "OpenGL": "gl"}.get(device.summary.backend)


def check_shared_output(cluster, output: Path) -> None:
    """Refuse, before any step, an output_dir the learner's node does not see: the learner writes the
    checkpoints there and the driver reads them back."""
    marker = output / f".wgrpo-driver-{os.getpid()}"
    marker.write_text("")
    try:
        if not cluster.call_learner("sees", str(marker)):
            raise InputError(f"--output-dir {output}: the learner actor does not see it from its node ("
                             f"{cluster.learner_info['host']}); put it on a filesystem every node shares")
    finally:
        marker.unlink(missing_ok=True)
