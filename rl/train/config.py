"""`TrainConfig`: every option of `wgrpo train`, with help text; the CLI and TOML files map onto it.

Owns: the options' defaults and range checks (`OptionError` names the option, and the file and key when the
value came from one); parsing of the `key=value,...` option strings; building the task the options describe;
the demo's task options (`DEMO_TASK_OPTIONS`); the paths a run records (absolute, so that a checkpoint means
the same from any directory); and reading a saved config back (`saved_config`: every field there, checked) and
what a resumed run may change (`resume_config`). The type check all config dataclasses share is
`rl.train.fields`'s (`check_field_types`, re-exported here for them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from wgrpo.engine import InputError, is_hub_id
from wgrpo.rl.grpo import GRPOLossConfig
from wgrpo.rl.train.checkpoint import CONFIG_FILE
from wgrpo.rl.train.fields import (  # check_field_types and checked_field_value: also for the other configs
    Mismatch, check_field_types, checked_field_value, file_value, option_flag)
from wgrpo.rl.train.task_options import (absolute_task_paths, options_of, parse_options, parse_weights, task_kwargs,
                                         weights_of)

SANDBOXES = ("auto", "bwrap", "unshare", "limits")
PATH_FIELDS = ("model", "output_dir", "resume", "dataset", "eval_dataset")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
LR_SCHEDULES = ("cosine", "linear", "constant_with_warmup", "constant")
# what a resumed run may change: when it stops, where it writes, how often it saves and evaluates, and what the
# machine it resumes on can hold
RESUME_MAY_CHANGE = ("steps", "output_dir", "save_every", "eval_every", "device_memory")
# how the step's work is cut to fit the device, so a run resumed on a smaller device may change them: the same
# update up to float rounding (and, with LoRA dropout, other masks: they are keyed by the micro-batch)
MEMORY_OPTIONS = ("per_device_train_batch_size", "gradient_accumulation_steps", "generation_chunk_size",
                  "gradient_checkpointing")
RESUME_MAY_CHANGE += MEMORY_OPTIONS
# where the metrics go and how much is kept changes nothing of the training either
# where the sampling runs changes nothing either (the synchronous schedule gives one process's results); an
# asynchronous run may go on synchronously (in one process, say), or the other way round
RESUME_MAY_CHANGE += ("rollout_workers", "ray_address", "async_rollouts")
RESUME_MAY_CHANGE += ("report_to", "run_name", "logging_steps", "log_completions", "num_completions_to_print",
                      "save_total_limit", "per_device_eval_batch_size")
# The demo's problems, which a fresh model's warm-up and GRPO train on when --task-options is empty: two-digit
# additions, in the plain template, whose questions do not spell out the answer format (the warm-up teaches it)
DEMO_TASK_OPTIONS = "digits=2,ops=+,template=plain,instructions=false"


class OptionError(InputError):
    """A value of the right type out of its option's range. The message names the option (`--group-size 1:
    must be at least 2: ...`); `in_file` gives the same error naming the file and key, for a value that came
    from a file (`run.toml: group_size = 1: ...`)."""

    def __init__(self, name: str, value, problem: str):
        super().__init__(f"{option_flag(name)} {value}: {problem}")
        self.name, self.value, self.problem = name, value, problem

    def in_file(self, path, written=dataclasses.MISSING) -> InputError:
        """This error naming `path` and the key; `written` is the value as the file holds it (a TOML table for
        a `key=value,...` option; default: the value checked)."""
        shown = self.value if written is dataclasses.MISSING else written
        return InputError(f"{path}: {self.name} = {file_value(shown)}: {self.problem}")


def _help(text: str, default, **extra):
    return field(default=default, metadata={"help": text, **extra})


# trainer_config.json of earlier versions: options since renamed (old -> new), and options added since, which
# take their defaults there (the behaviour those runs had)
RENAMED_OPTIONS = {"warmup_examples": "sft_examples", "warmup_steps": "sft_steps",
                   "warmup_error_rate": "sft_error_rate", "warmup_lr": "sft_lr",
                   "generation_batch_size": "generation_chunk_size"}
ADDED_OPTIONS = (*MEMORY_OPTIONS, "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
                 "use_rslora", "dataset", "eval_dataset", "reward_funcs", "max_prompt_length", "lr_scheduler_type",
                 "adam_beta1", "adam_beta2", "adam_epsilon", "save_total_limit", "report_to", "run_name",
                 "logging_steps", "log_completions", "num_completions_to_print", "advantage_std", "eval_on_start",
                 "per_device_eval_batch_size", "rollout_workers", "async_rollouts", "ray_address")


@dataclass
class TrainConfig:
    # what to train
    task: str = _help("task: countdown, arithmetic, gsm8k or code", "arithmetic")
    task_options: str = _help("task options as key=value pairs separated by commas, e.g. 'digits=3,ops=+-' or "
                              "'path=train.jsonl' (a table in a TOML file); empty: the task's own defaults, but "
                              f"the demo (arithmetic, no --model) trains on {DEMO_TASK_OPTIONS}", "",
                              key_value=True)
    dataset: str = _help("a JSONL file of prompts in TRL's format (`prompt` as text or a list of role/content "
                         "messages; every other field reaches the reward functions as a keyword argument); it "
                         "replaces --task and needs --reward-funcs", "")
    eval_dataset: str = _help("with --dataset: a JSONL file of held-out prompts, evaluated greedily with the same "
                              "reward functions; empty: no evaluation", "")
    reward_funcs: str = _help("with --dataset: the reward functions, TRL's `fn(prompts, completions, "
                              "completion_ids, **columns)`, as a comma list of built-ins (accuracy, format, "
                              "countdown, code), file.py:name[,name...] or package.module:name", "")
    sandbox: str = _help("how the code task runs tests: auto, bwrap or unshare; code rewards run only under "
                         "bwrap/unshare isolation unless limits (resource limits alone, no isolation) is chosen "
                         "explicitly", "auto", choices=SANDBOXES)
    model: str = _help("checkpoint directory or Hugging Face Hub id (Qwen/Qwen2.5-0.5B-Instruct) to start from; "
                       "empty: warm up a fresh tiny model first (the demo)", "")
    dtype: str = _help("how the starting checkpoint's weights are held: auto (as stored), float32, bfloat16 or "
                       "float16. The frozen reference model keeps this dtype; the policy trains float32 master "
                       "weights, and its checkpoints are float32", "auto", choices=DTYPE_CHOICES)
    device_memory: str = _help("bytes the device can hold, e.g. 16G: a run whose estimated peak is over it is "
                               "refused before it starts; empty: $WGRPO_DEVICE_MEMORY, else the free host memory "
                               "for a CPU adapter, else unchecked (wgpu reports no memory size)", "")
    output_dir: str = _help("checkpoints, metrics.jsonl and curves.png go here", "runs/grpo")
    resume: str = _help("training checkpoint to continue from, exactly where it stopped, with its saved options "
                        "(only --steps, --output-dir, --save-every, --eval-every, --device-memory, the memory options "
                        "and the logging options may change)", "")
    seed: int = _help("seed of everything random: problems, sampling, a fresh model's weights", 0)
    # the warm-up of a fresh model (used when --model is empty)
    sft_examples: int = _help("warm-up: reasoning traces to train on", 4000)
    sft_steps: int = _help("warm-up: supervised steps", 600)
    sft_error_rate: float = _help("warm-up: fraction of traces that forget their carries (above 0.5 the "
                                     "base model's greedy answer is wrong whenever a carry occurs)", 0.6)
    sft_lr: float = _help("warm-up: peak learning rate", 3e-3)
    vocab_size: int = _help("fresh model: tokenizer vocabulary", 512)
    hidden_size: int = _help("fresh model: width", 128)
    num_layers: int = _help("fresh model: decoder blocks", 4)
    num_heads: int = _help("fresh model: attention heads", 4)
    num_kv_heads: int = _help("fresh model: key/value heads", 2)
    intermediate_size: int = _help("fresh model: MLP width", 384)
    # rollout
    steps: int = _help("GRPO steps", 50)
    prompts_per_step: int = _help("problems per step (B)", 8)
    group_size: int = _help("completions per problem (G), at least 2", 8)
    max_new_tokens: int = _help("completion length limit in tokens", 48)
    max_prompt_length: int = _help("longest prompt in tokens: a longer one is refused before training, naming it; "
                                   "0: what the model's context leaves after --max-new-tokens", 0)
    temperature: float = _help("sampling temperature (log-probs use the same)", 1.0)
    top_k: int = _help("sample among the k most likely tokens; 0: all", 0)
    top_p: float = _help("nucleus sampling mass in (0, 1]", 1.0)
    reward_weights: str = _help("reward parts and weights, e.g. 'accuracy=1,format=0.1' (a table in a TOML "
                                "file), or one weight per reward function in order, e.g. '1,0.1'; empty: the task's "
                                "(1 for each reward function)", "", key_value=True)
    dynamic_sampling: bool = _help("drop groups whose rewards are all equal and sample more (DAPO)", False)
    max_sampling_rounds: int = _help("dynamic sampling: rollouts per step at most", 3)
    mask_truncated: bool = _help("train on no completion that hit max_new_tokens (DAPO overlong filtering)", False)
    # update
    lr: float = _help("peak learning rate (AdamW)", 1e-4)
    lr_scheduler_type: str = _help("learning rate after the warm-up: cosine or linear decay to lr * "
                                   "--min-lr-ratio, constant_with_warmup, or constant (no warm-up either)",
                                   "cosine", choices=LR_SCHEDULES)
    warmup_lr_steps: int = _help("linear learning-rate warm-up steps", 5)
    min_lr_ratio: float = _help("cosine or linear decay ends at lr * this, in [0, 1]", 0.5)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    adam_beta1: float = _help("AdamW beta1", 0.9)
    adam_beta2: float = _help("AdamW beta2", 0.999)
    adam_epsilon: float = _help("AdamW epsilon", 1e-8)
    grad_clip: float = _help("global gradient-norm clip; 0 disables", 1.0)
    mu: int = _help("policy updates per rollout batch (ratios leave 1 after the first)", 1)
    eps_low: float = _help("clip range below: rho >= 1 - eps_low", 0.2)
    eps_high: float = _help("clip range above: rho <= 1 + eps_high (DAPO: 0.28)", 0.2)
    beta: float = _help("k3 KL penalty weight to the frozen reference; 0: no reference model", 0.04)
    loss_type: str = _help("grpo, bnpo, dapo or dr_grpo (see DESIGN.md)", "grpo",
                           choices=("grpo", "bnpo", "dapo", "dr_grpo"))
    scale_rewards: str = _help("advantages: std ((r - mean) / (std + eps)) or none (Dr. GRPO)", "std",
                               choices=("std", "none"))
    advantage_std: str = _help("the group's std that --scale-rewards std divides by: population (over G) or bessel "
                               "(over G - 1: torch.std's default, TRL's); also the logged reward_std's",
                               "population", choices=("population", "bessel"))
    # memory: the same step in smaller pieces
    per_device_train_batch_size: int = _help("completions per forward/backward of the update (a micro-batch; "
                                             "gradients accumulate over the micro-batches and the loss keeps the "
                                             "whole batch's normalisation); 0: the whole rollout at once", 0)
    gradient_accumulation_steps: int = _help("micro-batches per optimizer step; 0: as many as "
                                             "--per-device-train-batch-size needs. Given both, their product must "
                                             "be --prompts-per-step x --group-size", 0)
    generation_chunk_size: int = _help("completions sampled at once, whole groups (a multiple of --group-size), "
                                       "so the KV cache fits; 0: the whole rollout at once", 0)
    gradient_checkpointing: bool = _help("keep only each decoder layer's input during the update's forward and "
                                         "recompute the layer in the backward: the same gradients for far fewer "
                                         "activation bytes, at about a third more compute", False)
    # scale-out on Ray (the ray extra)
    rollout_workers: int = _help("rollout actors on Ray, each sampling its share of a step's groups beside the "
                                 "learner actor (with a GPU of its own where the cluster has GPUs); the same "
                                 "results as one process; 0: one process, no Ray", 0)
    async_rollouts: int = _help("1: the rollout workers sample step t + 1 with the weights before update t while "
                                "it runs (one step off-policy, logged as sampling/staleness; needs "
                                "--rollout-workers); 0: synchronous", 0)
    ray_address: str = _help("the Ray cluster to join (auto: the one `ray start` runs on this machine); empty: a "
                             "local Ray started for the run", "")
    # LoRA (PEFT's names and meanings)
    use_peft: bool = _help("train LoRA adapters on the frozen base model (kept in --dtype); the KL reference is "
                           "the base with the adapters off, and checkpoints are PEFT adapter directories "
                           "(`wgrpo merge` writes a full model)", False)
    lora_r: int = _help("LoRA rank", 16)
    lora_alpha: float = _help("LoRA alpha: the update is scaled by alpha / r", 32.0)
    lora_dropout: float = _help("dropout on the adapters' input while training, in [0, 1)", 0.05)
    lora_target_modules: str = _help("linear layers that get adapters: all-linear (every projection of the decoder "
                                     "layers, not lm_head) or a comma list such as q_proj,v_proj", "all-linear")
    use_rslora: bool = _help("rank-stabilised LoRA: scale by alpha / sqrt(r)", False)
    # evaluation and checkpoints
    eval_every: int = _help("evaluate pass@1 (greedy) on held-out problems every N steps; 0: start and end only",
                            10)
    eval_problems: int = _help("held-out problems per evaluation", 200)
    eval_on_start: bool = _help("evaluate before the first step too (the base model's row of the final table)", True)
    per_device_eval_batch_size: int = _help("held-out problems decoded at once", 64)
    save_every: int = _help("checkpoint every N steps into output_dir/checkpoint-N; 0: only the final one", 0)
    save_total_limit: int = _help("keep at most this many checkpoint-N directories, deleting the oldest once a "
                                  "newer one is written (output_dir/final is never deleted); 0: keep all", 0)
    # logging (TRL's names)
    report_to: str = _help("where metrics go besides metrics.jsonl (always written): jsonl, tensorboard, wandb, "
                           "all (every one installed) or none; a comma list", "jsonl")
    run_name: str = _help("the run's name in wandb; empty: wandb's own", "")
    logging_steps: int = _help("every N steps the metrics averaged since the last report go to --report-to and "
                               "the callbacks' on_log (metrics.jsonl has every step)", 1)
    log_completions: bool = _help("at each logging step, write the step's prompts, completions, rewards and "
                                  "advantages to output_dir/completions.jsonl and print a sample", False)
    num_completions_to_print: int = _help("with --log-completions: rows printed per logging step; 0: all", 4)

    def __post_init__(self):
        check_field_types(self)
        for name in ("steps", "prompts_per_step", "max_new_tokens", "mu", "eval_problems", "max_sampling_rounds",
                     "sft_examples", "sft_steps", "vocab_size", "hidden_size", "num_layers", "num_heads",
                     "num_kv_heads", "intermediate_size"):
            _require(self, name, getattr(self, name) >= 1, "must be at least 1")
        _require(self, "group_size", self.group_size >= 2, "must be at least 2: GRPO's advantages compare the "
                 "completions of a group, so a group of one carries no signal")
        for name in ("seed", "top_k", "warmup_lr_steps", "save_every", "eval_every", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "generation_chunk_size"):
            _require(self, name, getattr(self, name) >= 0, "must be at least 0")
        _require(self, "grad_clip", self.grad_clip >= 0, "must be >= 0 (0 disables clipping)")
        for name in ("weight_decay", "beta", "eps_high"):
            _require(self, name, getattr(self, name) >= 0, "must be >= 0")
        for name in ("lr", "sft_lr"):
            _require(self, name, getattr(self, name) > 0, "must be > 0")
        _require(self, "temperature", self.temperature > 0, "must be > 0 for training (sampling and log-probs "
                 "divide by it)")
        _require(self, "top_p", 0 < self.top_p <= 1, "must be in (0, 1]")
        _require(self, "eps_low", 0 <= self.eps_low < 1, "must be in [0, 1)")
        for name in ("min_lr_ratio", "sft_error_rate"):
            _require(self, name, 0 <= getattr(self, name) <= 1, "must be in [0, 1]")
        for name, parse in (("task_options", options_of), ("reward_weights", weights_of)):
            try:
                parse(getattr(self, name))
            except Mismatch as mismatch:
                raise OptionError(name, getattr(self, name), str(mismatch)) from None
        self._check_batching()
        self._check_dataset()
        _require(self, "rollout_workers", self.rollout_workers >= 0, "must be at least 0 (0: one process)")
        _require(self, "async_rollouts", self.async_rollouts in (0, 1), "must be 0 (synchronous) or 1 (one step "
                 "off-policy)")
        _require(self, "async_rollouts", not self.async_rollouts or self.rollout_workers >= 1,
                 "needs --rollout-workers 1 or more: the workers sample while the learner updates")
        _require(self, "logging_steps", self.logging_steps >= 1, "must be at least 1")
        _require(self, "per_device_eval_batch_size", self.per_device_eval_batch_size >= 1, "must be at least 1")
        for name in ("save_total_limit", "num_completions_to_print", "max_prompt_length"):
            _require(self, name, getattr(self, name) >= 0, "must be at least 0")
        for name in ("adam_beta1", "adam_beta2"):
            _require(self, name, 0 <= getattr(self, name) < 1, "must be in [0, 1)")
        _require(self, "adam_epsilon", self.adam_epsilon > 0, "must be > 0")
        _require(self, "lora_r", self.lora_r >= 1, "must be at least 1")
        _require(self, "lora_alpha", self.lora_alpha > 0, "must be > 0")
        _require(self, "lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)")
        if self.use_peft:
            try:
                self.lora_config()  # the target modules, named before any model loads
            except InputError as error:
                problem = str(error).partition("target_modules: ")[2] or str(error)
                raise OptionError("lora_target_modules", self.lora_target_modules, problem) from None
        self.loss_config()  # the loss's own invariants

    def _check_batching(self) -> None:
        completions = self.prompts_per_step * self.group_size
        per_device, accumulation = self.per_device_train_batch_size, self.gradient_accumulation_steps
        if per_device and accumulation and per_device * accumulation != completions:
            raise InputError(f"--per-device-train-batch-size {per_device} x --gradient-accumulation-steps "
                             f"{accumulation} = {per_device * accumulation}: must be the completions of a step, "
                             f"--prompts-per-step x --group-size = {completions} (or give one of the two)")
        _require(self, "gradient_accumulation_steps", accumulation <= completions,
                 f"must be at most the completions of a step ({completions})")
        _require(self, "generation_chunk_size", self.generation_chunk_size % self.group_size == 0,
                 f"must be a multiple of --group-size {self.group_size}: groups are sampled whole")

    def _check_dataset(self) -> None:
        if self.dataset:
            if self.task not in ("dataset", "arithmetic") or self.task_options.strip():
                raise InputError(f"--dataset {self.dataset}: replaces --task and --task-options (the prompts come "
                                 f"from the file, the rewards from --reward-funcs); give one or the other")
            if not self.reward_funcs.strip():
                raise InputError(f"--dataset {self.dataset}: needs --reward-funcs, the functions that score its "
                                 f"completions (e.g. --reward-funcs accuracy,format or my_rewards.py:f,g)")
        elif self.reward_funcs.strip():
            raise InputError(f"--reward-funcs {self.reward_funcs}: applies to --dataset; the built-in tasks score "
                             f"with their own rules (weigh them with --reward-weights)")
        elif self.eval_dataset:
            raise InputError(f"--eval-dataset {self.eval_dataset}: applies to --dataset (a built-in task holds out "
                             f"its own problems; a JSONL task takes eval_path=... in --task-options)")

    def micro_batches(self, completions: int) -> list[tuple[int, int]]:
        """(start, stop) of each micro-batch of an update over `completions` rows, in order."""
        from wgrpo.rl.batch import micro_batch_ranges

        return micro_batch_ranges(completions, self.per_device_train_batch_size, self.gradient_accumulation_steps)

    def lora_config(self):
        """The LoraConfig of --use-peft's options."""
        from wgrpo.engine import LoraConfig

        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=self.lora_target_modules, use_rslora=self.use_rslora)

    def loss_config(self) -> GRPOLossConfig:
        return GRPOLossConfig(eps_low=self.eps_low, eps_high=self.eps_high, beta=self.beta,
                              loss_type=self.loss_type, max_completion_length=self.max_new_tokens,
                              scale_rewards=self.scale_rewards)

    def task_kwargs(self) -> dict:
        """The keyword options of `get_task(self.task, ...)`: --task-options, and --sandbox for the code task."""
        return task_kwargs(self.task, self.task_options, self.sandbox)

    def weights(self, task) -> dict[str, float]:
        """Reward weights by part name: --reward-weights (by name, or one per reward in `task.reward_names`'
        order), else the task's own. InputError naming a part that `task` does not give (a typo would otherwise
        weigh nothing, silently), or a list of the wrong length."""
        if not self.reward_weights:
            return dict(task.default_weights)
        weights, names = parse_weights(self.reward_weights), list(task.reward_names)
        if isinstance(weights, list):
            if len(weights) != len(names):
                raise InputError(f"--reward-weights {self.reward_weights}: {len(weights)} weights for the "
                                 f"{len(names)} rewards of task {task.name!r}, {', '.join(names)}")
            return dict(zip(names, weights))
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise InputError(f"--reward-weights {self.reward_weights}: {unknown} name no reward of task "
                             f"{task.name!r}; it gives {sorted(names)}")
        return weights

    def with_demo_task_options(self) -> TrainConfig:
        """This config with DEMO_TASK_OPTIONS as its task options when it runs the demo (a fresh model: no
        --model and no --resume; task arithmetic; no --task-options), else this config. `run_train` resolves
        it once, so the run's trainer_config.json records the options it trained on."""
        if self.dataset:
            return self if self.task == "dataset" else dataclasses.replace(self, task="dataset")
        if self.model or self.resume or self.task != "arithmetic" or self.task_options.strip():
            return self
        return dataclasses.replace(self, task_options=DEMO_TASK_OPTIONS)

    def absolute_paths(self) -> TrainConfig:
        """This config with `model`, `output_dir`, `resume`, the datasets, the task's `path`/`eval_path` and the
        reward-function files absolute (relative to the current directory): what a run records, so that its
        checkpoint means the same from anywhere."""
        paths = {name: os.path.abspath(getattr(self, name)) for name in PATH_FIELDS  # a Hub id stays one
                 if getattr(self, name) and not (name == "model" and is_hub_id(self.model))}
        from wgrpo.rl.reward_funcs import absolute_reward_spec

        return dataclasses.replace(self, **paths, task_options=absolute_task_paths(self.task_options),
                                   reward_funcs=absolute_reward_spec(self.reward_funcs))


def _require(config, name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise OptionError(name, getattr(config, name), expected)


# ---------------------------------------------------------------------------------------------- resume


def read_saved_config(directory: str | Path, *, required: bool = True) -> dict[str, Any]:
    """The options a checkpoint was trained with (its trainer_config.json), as saved; {} when there is none and
    not `required`. InputError naming the file when it is missing (and required), unreadable, or not a JSON
    object."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        if not required:
            return {}
        if not Path(directory).is_dir():
            raise InputError(f"--resume {directory}: no such checkpoint directory")
        raise InputError(f"--resume {directory}: not a training checkpoint, {CONFIG_FILE} is missing (a plain "
                         f"model directory can start a run with --model)")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path}: expected a JSON object of training options, got {type(saved).__name__}")
    return saved


def saved_config(config_cls: type, saved: Mapping[str, Any], source: str | Path):
    """The `config_cls` instance that the options a checkpoint saved describe (its trainer_config.json, read
    from `source`). Every field must be there: a missing one would silently take today's default, and a resumed
    run would train differently from the run it continues. InputError naming `source` and the fields that
    are unknown (another version of wgrpo) or missing, or the field and value of the wrong type or out of its
    range (`trainer_config.json: group_size = 1: must be at least 2 ...`)."""
    names = [f.name for f in dataclasses.fields(config_cls)]
    saved = _current_names(config_cls, saved)
    unknown = sorted(set(saved) - set(names))
    if unknown:
        raise InputError(f"{source}: unknown options {unknown} (written by another version of wgrpo?)")
    missing = [name for name in names if name not in saved]
    if missing:
        raise InputError(f"{source}: missing options {missing} (written by another version of wgrpo?); a "
                         f"resumed run takes every option from its checkpoint, none from today's defaults")
    values = {name: checked_field_value(config_cls, name, saved[name], str(source)) for name in names}
    try:
        return config_cls(**values)
    except OptionError as error:
        raise error.in_file(source, saved.get(error.name, error.value)) from None
    except InputError as error:  # a check across fields, or one that names no single field
        raise InputError(f"{source}: {error}") from None


def _current_names(config_cls: type, saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config in today's option names: renamed options under their new names, and options added since
    it was written at their defaults (TrainConfig's RENAMED_OPTIONS and ADDED_OPTIONS)."""
    if config_cls is not TrainConfig:
        return dict(saved)
    current = {RENAMED_OPTIONS.get(name, name): value for name, value in saved.items()}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {**{name: defaults[name] for name in ADDED_OPTIONS if name not in current}, **current}


def resume_config(checkpoint: str | Path, overrides: Mapping[str, Any] | None = None, *,
                  saved: Mapping[str, Any] | None = None, shown: Callable[[str, Any], str] | None = None,
                  advice: str | None = None) -> tuple[TrainConfig, list[str]]:
    """The config that continues the run saved in `checkpoint`, and one `changed: ...` line per option changed.

    The checkpoint's trainer_config.json (or `saved`), every option checked and none missing (`saved_config`),
    is the run's configuration; `resume` becomes `checkpoint`.
    `overrides` are the options given for this run, by field name: those in RESUME_MAY_CHANGE replace the saved
    values; any other must equal its saved value (paths compare absolute), else InputError naming the option,
    before any work: a resumed run that silently trained differently would not continue the run. The error
    shows an option as `shown(name, value)` does (default: as the command line gives it) and ends with
    `advice` (default: how the command line starts a new run).
    """
    checkpoint = os.path.abspath(checkpoint)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    stray = sorted(set(overrides or {}) - set(names))
    if stray:
        raise TypeError(f"resume_config: overrides name no TrainConfig field: {stray}")
    saved = read_saved_config(checkpoint) if saved is None else saved
    base = saved_config(TrainConfig, saved, Path(checkpoint) / CONFIG_FILE).absolute_paths()
    given = {name: value for name, value in (overrides or {}).items() if name != "resume"}
    wanted = dataclasses.replace(base, **given).absolute_paths()
    advice = advice or f"start a new run from {checkpoint} with --model to change it"
    return continue_saved_run(base, {name: getattr(wanted, name) for name in names if name in given},
                              RESUME_MAY_CHANGE, checkpoint, advice, same=_same, shown=shown)


def continue_saved_run(saved, wanted: Mapping[str, Any], may_change: Sequence[str], checkpoint: str, advice: str,
                       same: Callable[[str, Any, Any], bool] = lambda name, old, new: old == new,
                       shown: Callable[[str, Any], str] | None = None):
    """(the config that continues the run saved in `checkpoint`, one `changed: ...` line per option changed):
    the saved config `saved` with the `wanted` values (field name -> value) that differ from it, when all of
    those are in `may_change`; any other that differs is refused by name, with `advice` on what to do instead.
    `same(name, saved value, wanted value)` says when two values mean the same option; `shown(name, value)` how
    the error shows a wanted option (default `shown_option`)."""
    shown = shown or shown_option
    differing = [name for name, value in wanted.items() if not same(name, getattr(saved, name), value)]
    refused = [name for name in differing if name not in may_change]
    if refused:
        clash = "; ".join(f"{shown(name, wanted[name])}: the run in {checkpoint} was trained with "
                          f"{shown_saved(name, getattr(saved, name))}" for name in refused)
        raise InputError(f"{clash}; a resumed run keeps its configuration ({advice})")
    schedule = getattr(saved, "lr_scheduler_type", "cosine")
    changes = [change_line(name, getattr(saved, name), wanted[name], schedule) for name in differing]
    return dataclasses.replace(saved, resume=checkpoint, **{name: wanted[name] for name in differing}), changes


def _same(name: str, saved, given) -> bool:
    if name == "task_options":
        return parse_options(saved, "--task-options") == parse_options(given, "--task-options")
    if name == "reward_weights":
        return parse_weights(saved) == parse_weights(given)
    return saved == given


def _shown(value) -> str:
    return (value or "''") if isinstance(value, str) else str(value)


def shown_option(name: str, value) -> str:
    """The option as a command line gives it: `--steps 6`, `--dynamic-sampling`, `--no-dynamic-sampling`."""
    if isinstance(value, bool):
        return option_flag(name if value else f"no_{name}")
    return f"{option_flag(name)} {_shown(value)}"


def shown_saved(name: str, value) -> str:
    """A saved value as a message quotes it: booleans as their option, anything else as it is."""
    return shown_option(name, value) if isinstance(value, bool) else _shown(value)


def change_line(name: str, old, new, schedule: str = "cosine") -> str:
    """The `changed: ...` line of an option a resumed run changes (the steps: what that does to a decaying
    learning-rate `schedule`)."""
    line = f"changed: {name} {_shown(old)} -> {_shown(new)}"
    if name == "steps" and schedule in ("cosine", "linear"):
        line += (f" (the {schedule} learning-rate decay of the remaining steps now ends at step {new} instead of "
                 f"{old})")
    return line
