"""A GRPO step's sampling metrics, under TRL's names where TRL has the concept.

Owns: `StepSample` (a step's sampling rounds and the groups trained on) and the metrics of it:
- `reward` (mean combined reward), `reward_std` (the mean over groups of the rewards' spread within a group, as
  TRL logs it), `rewards/<name>/mean` and `rewards/<name>/std` (each reward function or part, unweighted; NaN
  entries, a function's "not applicable", left out);
- `completions/mean_length`, `completions/min_length`, `completions/max_length`, `completions/clipped_ratio`
  (completions that hit max_new_tokens), `completions/mean_terminated_length` (the others' mean length);
- `entropy` (minus the mean log-prob of the sampled tokens) and `frac_reward_zero_std` (the share of groups
  sampled whose rewards are all equal: advantages 0, no signal);
- `sampling/rounds`, `sampling/groups` (sampled), `sampling/groups_kept` (trained on);
- with dynamic sampling the completion metrics again under `kept/`, over the groups trained on;
- `time/rollout`, `time/reward` (seconds), `rollout_tokens_per_s`.
All over every completion sampled this step, in every sampling round, unless under `kept/`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wgrpo.rl.grpo import dynamic_sampling_filter, group_advantages
from wgrpo.rl.rollout import Rollout, nan_stat


@dataclass
class StepSample:
    """One step's sampling: every round's problems and groups, and the groups the update trains on."""
    problem_indices: list[list[int]]  # per round: the task's train indices, group by group
    rounds: list[Rollout]  # per round: every group sampled
    kept: Rollout  # the groups trained on

    @property
    def sampled(self) -> Rollout:
        """Every group sampled this step, round after round."""
        return Rollout([c for r in self.rounds for c in r.completions], self.kept.group_size,
                       sum(r.seconds_generate for r in self.rounds), sum(r.seconds_reward for r in self.rounds))


def completion_metrics(rollout: Rollout, prefix: str = "", ddof: int = 0) -> dict[str, float]:
    """Rewards and completion lengths of `rollout`'s completions (see the module docstring); the spreads with
    `ddof` (1: Bessel's correction, as TRL's torch.std and nanstd)."""
    rewards = rollout.rewards()
    completions = rollout.completions
    names = sorted({name for c in completions for name in c.parts})
    lengths = np.array([len(c.token_ids) for c in completions])
    clipped = np.array([c.finish_reason == "length" for c in completions])
    group_std = rewards.std(axis=1, ddof=ddof) if rewards.shape[1] > ddof else np.zeros(len(rewards))
    metrics = {f"{prefix}reward": float(rewards.mean()), f"{prefix}reward_std": float(group_std.mean())}
    for name in names:
        values = np.array([c.parts.get(name, np.nan) for c in completions], np.float64)
        metrics[f"{prefix}rewards/{name}/mean"] = nan_stat(values, np.mean)
        metrics[f"{prefix}rewards/{name}/std"] = nan_stat(values, lambda v: np.std(v, ddof=ddof) if v.size > ddof
                                                          else 0.0)
    metrics.update({
        f"{prefix}completions/mean_length": float(lengths.mean()),
        f"{prefix}completions/min_length": float(lengths.min()),
        f"{prefix}completions/max_length": float(lengths.max()),
        f"{prefix}completions/clipped_ratio": float(clipped.mean()),
        f"{prefix}completions/mean_terminated_length": float(lengths[~clipped].mean()) if (~clipped).any() else 0.0,
    })
    return metrics


def zero_signal_groups(sample: StepSample) -> int:
    """How many groups sampled this step (every round) have all-equal rewards, so no signal."""
    return sum(int((~dynamic_sampling_filter(r.rewards())).sum()) for r in sample.rounds)


def sampling_metrics(sample: StepSample, kept_too: bool, ddof: int = 0) -> dict[str, float]:
    """A step's sampling metrics (see the module docstring): over every group sampled, and with `kept_too`
    the same over the groups trained on under `kept/`; spreads with `ddof`."""
    sampled = sample.sampled
    logps = np.concatenate([c.logprobs for c in sampled.completions if len(c.logprobs)] or [np.zeros(1)])
    groups = len(sampled.completions) // sampled.group_size
    return {
        **completion_metrics(sampled, ddof=ddof),
        "entropy": float(-logps.mean()),  # sampled-token estimate of the policy's entropy
        "frac_reward_zero_std": zero_signal_groups(sample) / groups,
        "sampling/rounds": len(sample.rounds), "sampling/groups": groups,
        "sampling/groups_kept": len(sample.kept.completions) // sample.kept.group_size,
        **(completion_metrics(sample.kept, "kept/", ddof) if kept_too else {}),
        "time/rollout": sampled.seconds_generate, "time/reward": sampled.seconds_reward,
        "rollout_tokens_per_s": sampled.new_tokens / max(sampled.seconds_generate, 1e-9),
    }


def completion_table(step: int, kept: Rollout, tokenizer, scale_rewards: str, std: str = "population") -> list[dict]:
    """The rows of `--log-completions` for the groups trained on: prompt, completion, rewards, advantage (as the
    update computes it: `scale_rewards` and `std` as `group_advantages` takes them)."""
    from wgrpo.rl.train.reporting import completion_rows

    advantages, _ = group_advantages(kept.rewards(), scale=scale_rewards, std=std)
    completions = kept.completions
    names = sorted({name for c in completions for name in c.parts})
    prompts = [tokenizer.decode(c.prompt_ids, skip_special_tokens=False) for c in completions]
    rewards = {name: [c.parts.get(name, float("nan")) for c in completions] for name in names}
    return completion_rows(step, prompts, [c.text for c in completions], rewards,
                           [float(a) for a in advantages.reshape(-1)], reward=[c.reward for c in completions])
