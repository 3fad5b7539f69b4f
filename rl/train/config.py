"""`TrainConfig`: every option of `wgrpo train`, with help text; the CLI and TOML files map onto it.

Owns the options' defaults, their checks, and parsing of the `key=value,...` option strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from wgrpo.rl.grpo import GRPOLossConfig

LOSS_FIELDS = tuple(f.name for f in dataclasses.fields(GRPOLossConfig))


def _help(text: str, default, **extra):
    return field(default=default, metadata={"help": text, **extra})


@dataclass
class TrainConfig:
    # what to train
    task: str = _help("task: countdown, arithmetic, gsm8k or code", "arithmetic")
    task_options: str = _help("task options as key=value pairs separated by commas, e.g. "
                              "'digits=3,ops=+-' or 'path=train.jsonl'",
                              "digits=2,ops=+,template=plain,instructions=false")
    model: str = _help("checkpoint to start from; empty: warm up a fresh tiny model first (the demo)", "")
    output_dir: str = _help("checkpoints, metrics.jsonl and curves.png go here", "runs/grpo")
    resume: str = _help("training checkpoint to continue from, exactly where it stopped", "")
    seed: int = _help("seed of everything random: problems, sampling, a fresh model's weights", 0)
    # the warm-up of a fresh model (used when --model is empty)
    warmup_examples: int = _help("warm-up: reasoning traces to train on", 4000)
    warmup_steps: int = _help("warm-up: supervised steps", 600)
    warmup_error_rate: float = _help("warm-up: fraction of traces that forget their carries (above 0.5 the "
                                     "base model's greedy answer is wrong whenever a carry occurs)", 0.6)
    warmup_lr: float = _help("warm-up: peak learning rate", 3e-3)
    vocab_size: int = _help("fresh model: tokenizer vocabulary", 512)
    hidden_size: int = _help("fresh model: width", 128)
    num_layers: int = _help("fresh model: decoder blocks", 4)
    num_heads: int = _help("fresh model: attention heads", 4)
    num_kv_heads: int = _help("fresh model: key/value heads", 2)
    intermediate_size: int = _help("fresh model: MLP width", 384)
    # rollout
    steps: int = _help("GRPO steps", 50)
    prompts_per_step: int = _help("problems per step (B)", 8)
    group_size: int = _help("completions per problem (G)", 8)
    max_new_tokens: int = _help("completion length limit in tokens", 48)
    temperature: float = _help("sampling temperature (log-probs use the same)", 1.0)
    top_k: int = _help("sample among the k most likely tokens; 0: all", 0)
    top_p: float = _help("nucleus sampling mass in (0, 1]", 1.0)
    reward_weights: str = _help("reward parts and weights, e.g. 'accuracy=1,format=0.1'; empty: the task's", "")
    dynamic_sampling: bool = _help("drop groups whose rewards are all equal and sample more (DAPO)", False)
    max_sampling_rounds: int = _help("dynamic sampling: rollouts per step at most", 3)
    mask_truncated: bool = _help("train on no completion that hit max_new_tokens (DAPO overlong filtering)", False)
    # update
    lr: float = _help("peak learning rate (AdamW)", 1e-4)
    warmup_lr_steps: int = _help("linear learning-rate warm-up steps", 5)
    min_lr_ratio: float = _help("cosine decay ends at lr * this", 0.5)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    grad_clip: float = _help("global gradient-norm clip; 0 disables", 1.0)
    mu: int = _help("policy updates per rollout batch (ratios leave 1 after the first)", 1)
    eps_low: float = _help("clip range below: rho >= 1 - eps_low", 0.2)
    eps_high: float = _help("clip range above: rho <= 1 + eps_high (DAPO: 0.28)", 0.2)
    beta: float = _help("k3 KL penalty weight to the frozen reference; 0: no reference model", 0.04)
    loss_type: str = _help("grpo, bnpo, dapo or dr_grpo (see DESIGN.md)", "grpo",
                           choices=("grpo", "bnpo", "dapo", "dr_grpo"))
    scale_rewards: str = _help("advantages: std ((r - mean) / (std + eps)) or none (Dr. GRPO)", "std",
                               choices=("std", "none"))
    # evaluation and checkpoints
    eval_every: int = _help("evaluate pass@1 (greedy) on held-out problems every N steps; 0: start and end only",
                            10)
    eval_problems: int = _help("held-out problems per evaluation", 200)
    save_every: int = _help("checkpoint every N steps into output_dir/checkpoint-N; 0: only the final one", 0)

    def __post_init__(self):
        for name in ("steps", "prompts_per_step", "group_size", "max_new_tokens", "mu", "eval_problems",
                     "max_sampling_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"TrainConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"TrainConfig.temperature must be > 0 for training, got {self.temperature}")
        self.loss_config()  # validates the loss options

    def loss_config(self) -> GRPOLossConfig:
        return GRPOLossConfig(eps_low=self.eps_low, eps_high=self.eps_high, beta=self.beta,
                              loss_type=self.loss_type, max_completion_length=self.max_new_tokens,
                              scale_rewards=self.scale_rewards)

    def task_kwargs(self) -> dict:
        return parse_options(self.task_options, "task_options")

    def weights(self, task) -> dict[str, float]:
        if not self.reward_weights:
            return dict(task.default_weights)
        return {k: float(v) for k, v in parse_options(self.reward_weights, "reward_weights").items()}


def parse_options(text: str, name: str) -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'}: ints, floats and true/false become numbers and booleans."""
    options = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{name}: expected key=value pairs separated by commas, got {item!r} in {text!r}")
        value = value.strip()
        for convert in (int, float):
            try:
                value = convert(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        options[key.strip()] = value
    return options
