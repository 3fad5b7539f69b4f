"""The GRPO trainer (`wgrpo train`): rollout, rewards, group advantages, clipped policy updates, evaluation,
metrics and checkpoints.

Owns: the step loop (its options are `rl.train.config.TrainConfig`).
Randomness is a pure function of (seed, step): problems, sampling seeds and the data order; so `--resume` from
a checkpoint continues exactly as the uninterrupted run would (same adapter). Talks to `engine` for the model,
generation and the loss; never imports wgpu.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from wgrpo.rl.batch import build_update_batch
from wgrpo.rl.train.checkpoint import load_training_state, save_training_checkpoint
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.evaluate import evaluate
from wgrpo.rl.grpo import dynamic_sampling_filter, group_advantages, policy_loss
from wgrpo.rl.train.progress import Progress
from wgrpo.rl.rollout import Rollout, sample_and_score
from wgrpo.rl.train.schedule import cosine_lr, epoch_order

class GRPOTrainer:
    """Holds the policy, the frozen reference, the optimizer and the task; `run()` trains."""

    def __init__(self, config: TrainConfig, model, tokenizer, task, reference=None, start_step: int = 0,
                 start_model: str = ""):
        from wgrpo.engine import AdamW

        self.config, self.model, self.tokenizer, self.task = config, model, tokenizer, task
        self.reference = reference if config.beta > 0 else None
        if config.beta > 0 and reference is None:
            raise ValueError("beta > 0 needs a reference model")
        self.weights = config.weights(task)
        parts = set(task.reward_parts("", task.sample(0, "train")))
        unknown = set(self.weights) - parts
        if unknown:
            raise ValueError(f"reward_weights: {sorted(unknown)} name no reward of task {task.name!r}; it gives "
                             f"{sorted(parts)}")
        model.requires_grad_()
        self.optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.step = start_step
        self.start_model = start_model  # the checkpoint GRPO started from, also the reference model
        self.output = Path(config.output_dir)
        self.output.mkdir(parents=True, exist_ok=True)
        eos = model.config.eos_token_ids
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else (eos[0] if eos else 0)

    # ------------------------------------------------------------------ one step

    def rollout(self, step: int) -> tuple[Rollout, int]:
        """Sample and score this step's groups; with dynamic sampling, resample until enough carry signal."""
        cfg = self.config
        wanted, kept, rounds, zero_signal = cfg.prompts_per_step, [], 0, 0
        seconds = [0.0, 0.0]
        while len(kept) < wanted and rounds < cfg.max_sampling_rounds:
            indices = epoch_order(step * cfg.max_sampling_rounds + rounds, wanted, self.task.size("train"), cfg.seed)
            problems = [self.task.sample(i, "train") for i in indices]
            batch = sample_and_score(self.model, self.tokenizer, self.task, problems, cfg.group_size,
                                     max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                     top_k=cfg.top_k, top_p=cfg.top_p, seed=hash_seed(cfg.seed, step, rounds),
                                     weights=self.weights)
            seconds[0] += batch.seconds_generate
            seconds[1] += batch.seconds_reward
            groups = [batch.completions[g * cfg.group_size : (g + 1) * cfg.group_size] for g in range(wanted)]
            signal = dynamic_sampling_filter(batch.rewards())  # groups whose rewards are not all equal
            keep = signal if cfg.dynamic_sampling else np.ones(wanted, bool)
            zero_signal += int((~signal).sum()) if rounds == 0 else 0
            kept.extend(group for group, k in zip(groups, keep) if k)
            rounds += 1
            if not cfg.dynamic_sampling:
                break
        if not kept:  # every group was uniform in every round: train on the last batch, its advantages are 0
            kept = groups
        kept = kept[:wanted]
        completions = [c for group in kept for c in group]
        return Rollout(completions, cfg.group_size, *seconds), zero_signal

    def update(self, rollout: Rollout) -> dict[str, float]:
        """mu policy-gradient steps on one rollout batch; returns the update's metrics."""
        from wgrpo.engine import Tensor, clip_grad_norm_, no_grad

        cfg = self.config
        advantages, _ = group_advantages(rollout.rewards(), scale=cfg.scale_rewards)
        per_completion = advantages.reshape(-1).astype(np.float32)
        trained = [not (cfg.mask_truncated and c.finish_reason == "length") for c in rollout.completions]
        batch = build_update_batch([c.prompt_ids for c in rollout.completions],
                                   [c.token_ids for c in rollout.completions],
                                   [c.logprobs for c in rollout.completions], trained, self.pad_id)
        device = self.model.device
        targets = Tensor.from_numpy(batch.targets, device)
        mask, old_logp = Tensor.from_numpy(batch.mask, device), Tensor.from_numpy(batch.old_logp, device)
        adv = Tensor.from_numpy(per_completion, device)
        ref_logp = None
        if self.reference is not None:
            with no_grad():
                ref_logp = self.reference.token_logprobs(batch.inputs, targets, cfg.temperature)
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        for _ in range(cfg.mu):
            logp = self.model.token_logprobs(batch.inputs, targets, cfg.temperature)  # (N, T)
            loss, read_metrics = policy_loss(logp, old_logp, ref_logp, adv, mask, cfg.loss_config())
            loss.backward()
            norm = clip_grad_norm_(self.model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
            self.optimizer.step()
            self.optimizer.zero_grad()
            metrics = {"loss": float(loss.numpy()), **read_metrics()}
            if norm is not None:
                metrics["grad_norm"] = float(norm.numpy())
        seconds = time.perf_counter() - started
        tokens = int(np.count_nonzero(batch.inputs != self.pad_id)) * cfg.mu
        metrics.update({"time/update": seconds, "update_tokens_per_s": tokens / max(seconds, 1e-9)})
        return metrics

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        self.optimizer.lr = cosine_lr(self.step, cfg.steps, cfg.lr, cfg.warmup_lr_steps, cfg.min_lr_ratio)
        rollout, zero_signal = self.rollout(self.step)
        update = self.update(rollout)
        rewards, parts = rollout.rewards(), rollout.part_means()
        lengths = [len(c.token_ids) for c in rollout.completions]
        logps = np.concatenate([c.logprobs for c in rollout.completions if len(c.logprobs)] or [np.zeros(1)])
        self.step += 1
        metrics = {
            "step": self.step, "lr": self.optimizer.lr,
            "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
            **{f"reward/{name}": value for name, value in parts.items()},
            "accuracy": parts.get("accuracy", float("nan")),
            "format": parts.get("format", float("nan")),
            "completion_length/mean": float(np.mean(lengths)),
            "completion_length/truncated_frac": float(np.mean([c.finish_reason == "length"
                                                               for c in rollout.completions])),
            "entropy": float(-logps.mean()),  # sampled-token estimate of the policy's entropy
            "zero_signal_frac": zero_signal / cfg.prompts_per_step,
            "time/rollout": rollout.seconds_generate, "time/reward": rollout.seconds_reward,
            "rollout_tokens_per_s": rollout.new_tokens / max(rollout.seconds_generate, 1e-9),
            **update,
        }
        return metrics

    # ------------------------------------------------------------------ the loop

    def evaluate(self) -> dict[str, float]:
        cfg = self.config
        result = evaluate(self.model, self.tokenizer, self.task, problems=cfg.eval_problems,
                          max_new_tokens=cfg.max_new_tokens)
        return result.as_metrics()

    def save(self, path: Path) -> Path:
        state = {"step": self.step, "task": self.task.name, "start_model": self.start_model}
        return save_training_checkpoint(path, self.model, self.tokenizer, self.optimizer, state, self.config)

    def run(self) -> list[dict]:
        """Train from `self.step` to `config.steps`; returns the evaluation records (first and last included)."""
        cfg = self.config
        history = []
        metrics_path = self.output / "metrics.jsonl"
        progress = Progress(cfg.steps, "grpo", start=self.step, every=1)
        with open(metrics_path, "a") as log:
            if self.step == 0:
                record = {"step": 0, **self.evaluate()}
                history.append(record)
                log.write(json.dumps(record) + "\n")
            while self.step < cfg.steps:
                metrics = self.train_step()
                done = self.step == cfg.steps
                if done or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    metrics.update(self.evaluate())
                    history.append({k: v for k, v in metrics.items() if k == "step" or k.startswith("eval/")})
                log.write(json.dumps(metrics) + "\n")
                log.flush()
                progress.update(self.step, reward=metrics["reward/mean"], acc=metrics["accuracy"],
                                len=metrics["completion_length/mean"], kl=metrics.get("kl", 0.0))
                if done or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save(self.output / ("final" if done else f"checkpoint-{self.step}"))
                self._plot(metrics_path)
        progress.close()
        return history

    def _plot(self, metrics_path: Path) -> None:
        from wgrpo.rl.train.plot import plot_training

        plot_training(metrics_path, self.output / "curves.png")

    @classmethod
    def resume_from(cls, config: TrainConfig, checkpoint: str, device=None, reference=None,
                    task=None) -> "GRPOTrainer":
        """The trainer as it was when `checkpoint` was written (the task built from `config` unless given)."""
        from wgrpo.engine import load_pretrained
        from wgrpo.rl.tasks import get_task

        model, tokenizer = load_pretrained(checkpoint, device)
        state, optimizer_state, _ = load_training_state(checkpoint)
        task = task if task is not None else get_task(config.task, **config.task_kwargs())
        trainer = cls(config, model, tokenizer, task, reference,
                      start_step=int(state["step"]), start_model=state.get("start_model", ""))
        trainer.optimizer.load_state_dict(optimizer_state)
        return trainer


def hash_seed(*values: int) -> int:
    """A 31-bit seed from several integers (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0] & 0x7FFFFFFF)
