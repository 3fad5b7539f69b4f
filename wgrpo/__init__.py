"""wgrpo: GRPO reinforcement learning for language models on any GPU, every kernel a WGSL compute shader.

The subpackages live in the repository's top-level folders (mapped in pyproject.toml):
`wgrpo.kernels` (WGSL and its registry) <- `wgrpo.engine` (device, tensors, model, generation, optimizer)
<- `wgrpo.rl` (GRPO: tasks, rewards, sandbox, rollout, loss; `wgrpo.rl.train`: trainers and checkpoints)
<- `wgrpo.tools` (the `wgrpo` command line and benchmarks).

The public API is re-exported here and imported on first use, so `import wgrpo` is cheap and creates no device.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["AdamW", "CheckpointWriteError", "END_OF_TEXT", "GenerationResult", "InputError",
                     "KernelError", "Model", "ModelConfig", "NoAdapterError", "Tensor", "clip_coefficient",
                     "clip_grad_norm_", "generate", "get_device", "list_adapters", "load_pretrained", "no_grad", "ops",
                     "recover_checkpoints", "train_tokenizer"], "wgrpo.engine"),
    **dict.fromkeys(["get_task"], "wgrpo.rl.tasks"),
    **dict.fromkeys(["TrainConfig"], "wgrpo.rl.train.config"),
    **dict.fromkeys(["GRPOLoop"], "wgrpo.rl.train.trainer"),
    **dict.fromkeys(["GRPOConfig"], "wgrpo.rl.train.grpo_config"),
    **dict.fromkeys(["GRPOTrainer"], "wgrpo.rl.train.grpo_trainer"),
    **dict.fromkeys(["TrainerCallback", "TrainerControl", "TrainerState"], "wgrpo.rl.train.callbacks"),
    **dict.fromkeys(["LoraConfig"], "wgrpo.engine"),
    **dict.fromkeys(["SFTConfig", "train_sft"], "wgrpo.rl.train.sft"),
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what static tools see; at run time `__getattr__` imports on first use
    from wgrpo.engine import (END_OF_TEXT, AdamW, CheckpointWriteError, GenerationResult, InputError, KernelError,
                              Model, ModelConfig, NoAdapterError, Tensor, clip_coefficient, clip_grad_norm_, generate,
                              get_device, list_adapters, load_pretrained, no_grad, ops, recover_checkpoints, train_tokenizer)
    from wgrpo.rl.tasks import get_task
    from wgrpo.rl.train.config import TrainConfig
    from wgrpo.rl.train.sft import SFTConfig, train_sft
    from wgrpo.engine import LoraConfig
    from wgrpo.rl.train.callbacks import TrainerCallback, TrainerControl, TrainerState
    from wgrpo.rl.train.grpo_config import GRPOConfig
    from wgrpo.rl.train.grpo_trainer import GRPOTrainer
    from wgrpo.rl.train.trainer import GRPOLoop


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wgrpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
