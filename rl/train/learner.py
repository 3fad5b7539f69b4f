"""The policy side of a GRPO run: the policy model, its frozen reference, the optimizer and the tokenizer.

Owns `Learner`: readying the policy for training (float32 master weights, or LoRA adapters on a frozen base),
sampling completions from it (a whole rollout, or a shard of one: `sample`), the update of one step (the step's
learning rate, then `rl.train.update.grpo_update`), the trainer checkpoint of the model and optimizer, and the
trainable weights as host arrays for rollout workers. `rl.train.trainer.GRPOLoop` holds one in its own process;
with rollout workers it lives in a Ray actor of its own (`rl.cluster`) and the loop drives it from there, so
both compute a step identically. Never imports wgpu.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from wgrpo.rl.rollout import generate_chunks
from wgrpo.rl.train.checkpoint import save_training_checkpoint
from wgrpo.rl.train.schedule import scheduled_lr
from wgrpo.rl.train.update import grpo_update


def sample_shard(model, tokenizer, prompts: Sequence, group_size: int, *, first_sequence: int = 0,
                 prompt_width: int = 0, temperature: float, seed: int, stop: Sequence[str], max_new_tokens: int,
                 top_k: int = 0, top_p: float = 1.0, generation_batch_size: int = 0) -> list:
    """`group_size` completions of each of `prompts` (`engine.GeneratedSequence`s, prompt-major), in chunks of
    `generation_batch_size`; `first_sequence` and `prompt_width` as `rl.rollout.generate_chunks` takes them, so
    a shard of a rollout draws and computes what the whole rollout's one call would."""
    chunks = generate_chunks(model, list(prompts), group_size, generation_batch_size, first_sequence=first_sequence,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             seed=seed, stop=list(stop), tokenizer=tokenizer, prompt_width=prompt_width)
    return [sequence for chunk in chunks for sequence in chunk]


class Learner:
    """Holds the policy, the frozen reference and the optimizer of a run configured by `config` (TrainConfig)."""

    def __init__(self, config, model, tokenizer, reference=None):
        if tokenizer is None:  # load_pretrained's answer for a checkpoint without tokenizer.json
            raise ValueError("GRPOLoop: tokenizer is None; pass the model's tokenizers.Tokenizer (a checkpoint "
                             "without tokenizer.json cannot train: prompts and completions need it)")
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.reference = reference if config.beta > 0 else None
        if config.beta > 0 and reference is None and model.adapters is None:
            raise ValueError("beta > 0 needs a reference model (or LoRA adapters, whose base is the reference)")
        if config.use_peft != (model.adapters is not None):
            raise ValueError(f"GRPOLoop: use_peft={config.use_peft} but the model "
                             f"{'has' if model.adapters is not None else 'has no'} LoRA adapters")
        eos = model.config.eos_token_ids
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else (eos[0] if eos else 0)
        self.memory_estimate = None  # set by `check_memory`

    def check_memory(self, longest_prompt: int):
        """Estimate one step (prompts of up to `longest_prompt` tokens), refuse it when over the device's budget,
        then ready the policy for training: trainable float32 weights (LoRA: the adapters only), gradient
        checkpointing as configured, and the optimizer. Returns the estimate (`MemoryEstimate`)."""
        from wgrpo.engine import AdamW
        from wgrpo.rl.train.memory_check import check_grpo_memory

        config, model = self.config, self.model
        self.memory_estimate = check_grpo_memory(config, model, self.reference, longest_prompt)
        if model.adapters is None:
            model.requires_grad_()  # refuses a 16-bit policy: full fine-tuning trains float32 master weights
        for p in model.trainable_parameters():  # with LoRA the adapters only: the base stays frozen in its dtype
            p.requires_grad_()
        model.gradient_checkpointing = config.gradient_checkpointing
        self.optimizer = AdamW(model.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                               betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon)
        return self.memory_estimate

    @property
    def model_config(self):
        return self.model.config

    # ------------------------------------------------------------------ sampling

    def sample(self, prompts: Sequence, group_size: int, *, first_sequence: int = 0, prompt_width: int = 0,
               temperature: float, seed: int, stop: Sequence[str], max_new_tokens: int, top_k: int = 0,
               top_p: float = 1.0, generation_batch_size: int = 0) -> list:
        """`sample_shard` from the policy."""
        return sample_shard(self.model, self.tokenizer, prompts, group_size, first_sequence=first_sequence,
                            prompt_width=prompt_width, temperature=temperature, seed=seed, stop=stop,
                            max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
                            generation_batch_size=generation_batch_size)

    # ------------------------------------------------------------------ training

    def update(self, rollout, step: int, on_policy: bool = True) -> dict[str, float]:
        """Update number `step` (0-based) on `rollout`: the step's scheduled learning rate, then mu optimizer
        steps in micro-batches; returns the update's metrics with `learning_rate`. `on_policy`: whether the
        current weights sampled `rollout` (`rl.train.update.grpo_update`)."""
        from wgrpo.rl.train.trainer import hash_seed

        cfg = self.config
        self.optimizer.lr = scheduled_lr(cfg.lr_scheduler_type, step, cfg.steps, cfg.lr, cfg.warmup_lr_steps,
                                         cfg.min_lr_ratio)
        metrics = grpo_update(self.model, self.reference, self.optimizer, rollout, cfg, self.pad_id,
                              seed=hash_seed(cfg.seed, step, 1 << 20), on_policy=on_policy)
        return {"learning_rate": self.optimizer.lr, **metrics}

    def save(self, path: Path, state: dict) -> Path:
        """Write the training checkpoint `path` (model or adapters, tokenizer, optimizer, `state`, config)."""
        return save_training_checkpoint(path, self.model, self.tokenizer, self.optimizer, state, self.config)

    def load_optimizer(self, optimizer_state: dict, checkpoint: str) -> None:
        from wgrpo.rl.train.checkpoint import load_optimizer_state

        load_optimizer_state(self.optimizer, optimizer_state, checkpoint)

    def trainable_weights(self) -> dict[str, np.ndarray]:
        """What rollout workers load after each update: the trainable tensors as host arrays."""
        from wgrpo.engine import trainable_arrays

        return trainable_arrays(self.model)

    def peak_metrics(self) -> dict[str, float]:
        """The device memory measured since the last `reset_peak` (`engine.peak_metrics`'s names)."""
        from wgrpo.engine import peak_metrics

        return peak_metrics(self.model.device.runtime.memory)

    def reset_peak(self) -> None:
        self.model.device.runtime.memory.reset_peak()
