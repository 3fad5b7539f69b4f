"""What the learner and rollout actors of a scaled-out run do, as plain classes (`rl.cluster.ray_cluster` makes
them Ray actors; nothing here imports ray).

Owns: each actor's adapter (`actor_device`: the k-th hardware adapter for the k-th GPU Ray gave the process,
since Vulkan, Metal and DX12 ignore CUDA_VISIBLE_DEVICES), loading the run's model there as the single-process
run loads it, `LearnerProcess` (a `rl.train.learner.Learner` on the actor's adapter: policy, reference,
optimizer, also sampling its own shard) and `RolloutWorker` (a copy of the policy that loads the learner's
trainable weights in place, then samples shards). Never imports wgpu.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from wgrpo.rl.train.learner import Learner, sample_shard


def actor_device(spec: str | None, gpu_ids: Sequence) -> object:
    """The device of an actor: with GPUs assigned by Ray (`ray.get_gpu_ids()`), the hardware adapter whose
    ordinal is the first of them among those `spec` allows; else the adapter `spec` names (`--device`)."""
    from wgrpo.engine import get_device, hardware_adapter

    if gpu_ids:
        return get_device(str(hardware_adapter(int(gpu_ids[0]), spec or None).index))
    return get_device(spec or None)


def on_this_node(path: str, config) -> str:
    """`path` where this node has it; else, for a run started from a Hub id, that model resolved through this
    node's Hugging Face cache (fetched there if it may be), so only output_dir must be shared between nodes."""
    from wgrpo.engine import is_hub_id, resolve_model_path

    if not path or os.path.isdir(path) or not (config.model and is_hub_id(config.model)):
        return path
    repo, _, revision = config.model.partition("@")
    snapshot = Path(path)
    if snapshot.parent.name == "snapshots":  # the commit the driver resolved: every node loads the same files
        revision = snapshot.name
    return str(resolve_model_path(repo, revision=revision or None))


def load_policy(config, checkpoint: str, device, *, with_reference: bool, start: str = ""):
    """(policy, reference or None, tokenizer) as `wgrpo train` builds them: from the starting checkpoint, or
    from `config.resume`'s (then `start` is the run's starting checkpoint, the reference's source)."""
    from wgrpo.engine import load_pretrained, merge_and_unload
    from wgrpo.rl.train.pipeline import policy_and_reference

    start = on_this_node(start, config)
    if not config.resume:
        checkpoint = on_this_node(checkpoint, config)

    if config.resume:
        model, tokenizer = load_pretrained(checkpoint, device, config.dtype if config.use_peft else "auto")
        reference = None
        if with_reference and config.beta > 0 and not config.use_peft:
            reference = merge_and_unload(load_pretrained(start, device, config.dtype)[0])
        return model, reference, tokenizer
    from wgrpo.engine import is_hub_id

    model, tokenizer = load_pretrained(checkpoint, device, config.dtype)
    if config.model and is_hub_id(config.model):  # what a LoRA adapter names as its base: the Hub id itself
        model.name_or_path = config.model.partition("@")[0]
    policy, reference = policy_and_reference(model, config if with_reference else dataclasses.replace(config,
                                                                                                      beta=0.0))
    return policy, reference, tokenizer


class LearnerProcess:
    """The learner actor: the run's `Learner` on this process's adapter."""

    def __init__(self, config, checkpoint: str, start: str, device_spec: str | None, gpu_ids: Sequence = ()):
        device = actor_device(device_spec, gpu_ids)
        policy, reference, tokenizer = load_policy(config, checkpoint, device, with_reference=True, start=start)
        self.learner = Learner(config, policy, tokenizer, reference)
        self.device_name = device.name

    def describe(self) -> dict:
        """What the driver needs to know of the learner: its model's config, adapter, pid and the bytes of the
        trainable weights (what one worker's sync moves)."""
        from wgrpo.engine import trainable_tensors

        return {"model_config": self.learner.model_config, "device": self.device_name, "pid": os.getpid(),
                "pad_id": self.learner.pad_id,
                "host": socket.gethostname(),
                "trainable_bytes": sum(t.nbytes for t in trainable_tensors(self.learner.model).values())}

    def sees(self, path: str) -> bool:
        """Whether `path` exists on this actor's node (the driver's output_dir must be shared)."""
        return os.path.exists(path)

    def check_memory(self, longest_prompt: int):
        return self.learner.check_memory(longest_prompt)

    def load_optimizer(self, checkpoint: str) -> None:
        """The optimizer moments of the checkpoint being resumed."""
        from wgrpo.rl.train.checkpoint import load_training_state

        _, optimizer_state, _ = load_training_state(checkpoint)
        self.learner.load_optimizer(optimizer_state, checkpoint)

    def sample(self, prompts, group_size, **options) -> list:
        return self.learner.sample(prompts, group_size, **options)

    def update(self, rollout, step: int, on_policy: bool = True) -> dict[str, float]:
        return self.learner.update(rollout, step, on_policy)

    def trainable_weights(self) -> dict[str, np.ndarray]:
        """The trainable weights as host arrays (what the workers' `load_weights` takes)."""
        return self.learner.trainable_weights()

    def save(self, path: str, state: dict) -> str:
        return str(self.learner.save(path, state))

    def peak_metrics(self) -> dict[str, float]:
        return self.learner.peak_metrics()

    def reset_peak(self) -> None:
        self.learner.reset_peak()


class StaleWeights(RuntimeError):
    """A rollout worker was asked to sample with weights it does not hold (a process Ray restarted since)."""


class RolloutWorker:
    """A rollout actor: a copy of the policy on this process's adapter, loaded from `start` as a fresh run loads
    its policy (the frozen base of a LoRA run included, adapters attached), whose trainable weights
    `load_weights` then replaces with the learner's. `config.resume` is not read: the learner's weights are all
    it needs of a resumed run. `start` is the run's starting checkpoint, or the resumed one where that is gone
    (a restart then needs it still there)."""

    def __init__(self, config, start: str, device_spec: str | None, gpu_ids: Sequence = ()):
        device = actor_device(device_spec, gpu_ids)
        fresh = dataclasses.replace(config, resume="")
        self.model, _, self.tokenizer = load_policy(fresh, start, device, with_reference=False)
        self.version = -1  # the learner's update count whose weights are loaded; none yet
        self.device_name = device.name

    def describe(self) -> dict:
        return {"device": self.device_name, "pid": os.getpid(), "version": self.version}

    def load_weights(self, arrays: Mapping[str, np.ndarray], version: int) -> dict[str, float]:
        """Write the learner's trainable weights (as `LearnerProcess.trainable_weights` returned them) into this
        copy in place; returns the bytes and the seconds it took, until they are on the device."""
        from wgrpo.engine import load_trainable_arrays

        began = time.perf_counter()
        written = load_trainable_arrays(self.model, arrays, source=f"weights of update {version}")
        self.model.device.runtime.synchronize()
        self.version = int(version)
        return {"bytes": float(written), "seconds": time.perf_counter() - began, "pid": os.getpid()}

    def sample(self, prompts, group_size, *, version: int, **options) -> dict:
        """{"sequences": `rl.train.learner.sample_shard`'s, "version": the update whose weights sampled them},
        which must be `version`."""
        if version != self.version:
            raise StaleWeights(f"rollout worker (pid {os.getpid()}): asked to sample with the weights of update "
                               f"{version}, but holds {'none' if self.version < 0 else f'update {self.version}'}")
        return {"sequences": sample_shard(self.model, self.tokenizer, prompts, group_size, **options),
                "version": self.version}
