"""`GRPOConfig`: TRL's configuration class for GRPO (its argument names, meanings and defaults) and its
translation into wgrpo's `TrainConfig` (`to_train_config`), so that a TRL script runs with only its import changed.

Owns: the options of TRL's GRPOConfig and transformers' TrainingArguments that wgrpo models (mapped onto
TrainConfig fields; `CLI_ALIASES` names the 1:1 renames; `WGRPO_ONLY` the wgrpo-only extras), and PEFT's
LoraConfig as TrainConfig's LoRA options (`peft_lora_options`). The options that do not apply or have no effect,
and the refusal of unknown names, are `rl.train.trl_options`' (its tables are re-exported here). Every error is
one InputError in TRL's names, TrainConfig's range checks included.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass
from typing import Any

from wgrpo.engine import InputError
from wgrpo.rl.train.config import DTYPE_CHOICES, OptionError, TrainConfig
from wgrpo.rl.train.fields import checked_field_value
from wgrpo.rl.train.trl_options import (DATA_ORDER, FORMER_NAMES, NO_EFFECT, NOT_APPLICABLE, PEFT_LORA_KEYS,
                                        TRLOptions, check_not_applicable, peft_values, reject_unknown_options,
                                        unsupported_peft_fields)
from wgrpo.rl.train.trl_options import plain as _plain

__all__ = ["CLI_ALIASES", "FORMER_NAMES", "GRPOConfig", "NOT_APPLICABLE", "NO_EFFECT", "WGRPO_ONLY",
           "peft_lora_options"]

# TRL option -> TrainConfig field, for the options that are the same setting under another name
CLI_ALIASES = {"learning_rate": "lr", "max_steps": "steps", "num_generations": "group_size",
               "max_completion_length": "max_new_tokens", "epsilon": "eps_low", "epsilon_high": "eps_high",
               "num_iterations": "mu", "max_grad_norm": "grad_clip", "mask_truncated_completions": "mask_truncated",
               "save_steps": "save_every", "eval_steps": "eval_every", "warmup_steps": "warmup_lr_steps"}
WGRPO_ONLY = ("generation_chunk_size", "device_memory")
_PEFT_DEFAULT_TARGETS = "q_proj,v_proj"  # PEFT's own default for Llama/Qwen2 when target_modules is None

_SCHEDULES = {"linear": "linear", "cosine": "cosine", "cosine_with_min_lr": "cosine", "constant": "constant",
              "constant_with_warmup": "constant_with_warmup"}
_REPORTERS = ("jsonl", "tensorboard", "wandb", "all", "none")
_CHOICES = {"logging_strategy": ("steps", "epoch"), "save_strategy": ("no", "steps", "epoch"),
            "eval_strategy": ("no", "steps", "epoch"), "loss_type": ("grpo", "bnpo", "dapo", "dr_grpo"),
            "lr_scheduler_type": tuple(_SCHEDULES)}
_MODEL_KWARGS_NO_EFFECT = ("attn_implementation", "use_cache", "low_cpu_mem_usage", "device_map")
# TrainConfig field -> the option a TRL user gave, for TrainConfig's errors on fields with no 1:1 counterpart
_TRL_NAME = {**{train: trl for trl, train in CLI_ALIASES.items()}, "dtype": "bf16/fp16/model_init_kwargs",
             "min_lr_ratio": "lr_scheduler_kwargs min_lr_rate",
             **{train: f"peft_config {peft}" for peft, train in PEFT_LORA_KEYS.items()}}


def _fail(message: str):
    raise InputError(f"GRPOConfig: {message}")


@dataclass
class GRPOConfig(TRLOptions):
    """TRL's `GRPOConfig` for wgrpo's trainer: the same names, meanings and defaults (TRL 1.16); see
    `to_train_config` for what each becomes. wgrpo-only extras: `generation_chunk_size` (completions sampled at
    once, whole groups, so the KV cache fits; 0: the whole generation batch) and `device_memory` (bytes the
    device holds, e.g. '16G'; empty: found out)."""

    output_dir: str | None = "trainer_output"
    per_device_train_batch_size: int = 8  # completions per micro-batch
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0: the steps; else num_train_epochs over the train dataset
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "linear"  # linear, cosine, cosine_with_min_lr, constant, constant_with_warmup
    lr_scheduler_kwargs: dict | str | None = None
    warmup_steps: float = 0  # transformers 5: below 1 a ratio of the steps
    warmup_ratio: float = 0.0  # transformers 4's name for the ratio
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0
    seed: int = 42
    bf16: bool | None = None  # None: True unless fp16 (as TRL); set to whether the dtype is bfloat16
    fp16: bool = False
    gradient_checkpointing: bool = True  # TRL's default since 0.23
    activation_checkpointing: bool | None = None  # transformers 5's name; when set, it wins
    logging_strategy: str = "steps"
    logging_steps: float = 10  # below 1: a ratio of the steps
    report_to: str | list[str] | None = "jsonl"  # jsonl, tensorboard, wandb, all, none (metrics.jsonl always)
    run_name: str | None = None
    logging_dir: str | None = None  # the tensorboard reporter's directory
    eval_strategy: str = "no"
    eval_steps: float | None = None  # None: logging_steps
    per_device_eval_batch_size: int = 8  # held-out prompts decoded at once
    eval_on_start: bool = False  # evaluate before the first step too
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    remove_unused_columns: bool | None = False  # the reward functions receive every column
    model_init_kwargs: dict | str | None = None  # dtype (or torch_dtype) only
    disable_dropout: bool = False  # either: the engine's models have no dropout (LoRA's is peft_config's)
    num_generations: int = 8
    max_prompt_length: int | None = None  # removed in TRL 0.29; a longer prompt is refused
    max_completion_length: int | None = 512
    shuffle_dataset: bool | None = True
    generation_batch_size: int | None = None  # None: per_device_train_batch_size x gradient_accumulation_steps
    steps_per_generation: int | None = None  # None: gradient_accumulation_steps
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = 0
    beta: float = 0.0
    num_iterations: int = 1
    epsilon: float = 0.2
    epsilon_high: float | None = None  # None: epsilon
    use_bias_correction_kl: bool = False  # wgrpo's KL is plain k3 (TRL 1.16's default True: see __post_init__)
    reward_weights: list[float] | None = None
    scale_rewards: str | bool = "group"
    loss_type: str = "dapo"
    mask_truncated_completions: bool = False
    log_completions: bool = False
    num_completions_to_print: int | None = None
    generation_chunk_size: int = 0
    device_memory: str = ""

    def __post_init__(self):
        for name in _simply_typed(type(self)):
            checked_field_value(type(self), name, getattr(self, name))
        check_not_applicable(self)
        if self.num_iterations > 1:
            _fail(f"num_iterations {self.num_iterations}: not supported: wgrpo's step is one generation batch "
                  f"followed by its num_iterations updates, while TRL's global_step counts every optimizer step, so "
                  f"max_steps, logging/save/eval steps and the learning-rate schedule would silently count "
                  f"differently; keep num_iterations=1, or train with `wgrpo train --mu N`, whose steps count "
                  f"generation batches")
        if self.use_bias_correction_kl and self.beta > 0:
            _fail("use_bias_correction_kl True does not apply: wgrpo's KL penalty is the plain k3 estimate, "
                  "without the importance-ratio correction; set it to False to train with beta > 0")
        if self.remove_unused_columns:
            _fail("remove_unused_columns True does not apply: the reward functions receive every column of the "
                  "dataset as keyword arguments; leave it False")
        if not self.shuffle_dataset:
            _fail(f"shuffle_dataset {self.shuffle_dataset!r} does not apply: {DATA_ORDER}")
        for name, choices in _CHOICES.items():
            if _plain(getattr(self, name)) not in choices:
                _fail(f"{name} {_plain(getattr(self, name))!r}: wgrpo has {', '.join(choices)}")
        self.scale_rewards = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
        if self.scale_rewards not in ("group", "none"):
            _fail(f"scale_rewards {self.scale_rewards!r}: wgrpo scales by the group's std (group or True) or not "
                  f"at all (none or False)")
        if self.max_completion_length is None:
            _fail("max_completion_length None: wgrpo needs a completion length limit (it sizes the KV cache by it)")
        self.output_dir = "trainer_output" if self.output_dir is None else self.output_dir
        self.lr_scheduler_kwargs, self.model_init_kwargs = (
            _json_dict(name, getattr(self, name)) for name in ("lr_scheduler_kwargs", "model_init_kwargs"))
        self._check_batch()
        self.bf16 = self._dtype() == "bfloat16"  # as TRL resolves it, and the same dtype when the config is copied
        self._translate(steps=self.max_steps if self.max_steps > 0 else 1, per_epoch=1)  # every range, now

    def _check_batch(self) -> None:
        per_device, accumulation, group = (self.per_device_train_batch_size, self.gradient_accumulation_steps,
                                           self.num_generations)
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "per_device_eval_batch_size"):
            if getattr(self, name) < 1:
                _fail(f"{name} {getattr(self, name)}: must be at least 1")
        if group < 2:
            _fail(f"num_generations {group}: must be at least 2: GRPO's advantages compare the completions of a "
                  f"group, so a group of one carries no signal")
        completions = per_device * accumulation
        one_step = "wgrpo takes one optimizer step per generation batch, so"
        if self.generation_batch_size not in (None, completions):
            _fail(f"generation_batch_size {self.generation_batch_size}: {one_step} it must be "
                  f"per_device_train_batch_size x gradient_accumulation_steps = {completions} (or None)")
        if self.steps_per_generation not in (None, accumulation):
            _fail(f"steps_per_generation {self.steps_per_generation}: {one_step} it must be "
                  f"gradient_accumulation_steps = {accumulation} (or None)")
        if completions % group:
            _fail(f"generation_batch_size {completions} (per_device_train_batch_size {per_device} x "
                  f"gradient_accumulation_steps {accumulation}): must be divisible by num_generations {group}, "
                  f"so that every prompt's group is whole")
        self.generation_batch_size, self.steps_per_generation = completions, accumulation  # as TRL resolves them

    @property
    def prompts_per_step(self) -> int:
        """Prompts per optimizer step: the generation batch's groups."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations

    @property
    def evaluates_during_training(self) -> bool:
        """Whether the trainer evaluates periodically (eval_strategy other than 'no')."""
        return _plain(self.eval_strategy) != "no"

    def to_dict(self) -> dict[str, Any]:
        """Every option by name (enums as their values), as TrainingArguments.to_dict."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_train_config(self, *, model: str = "", train_size: int | None = None, use_peft: bool = False,
                        lora: dict | None = None) -> TrainConfig:
        """The TrainConfig of these options, training `model` on `train_size` rows that the trainer holds in
        memory with its reward functions (task "dataset"; a whole eval dataset is evaluated). `train_size` counts
        num_train_epochs in steps (max_steps <= 0) and an 'epoch' strategy: an epoch is its whole generation
        batches, floor(train_size / prompts_per_step), as TRL's sampler drops the last incomplete one. `lora`:
        PEFT LoraConfig values for `use_peft` (`peft_lora_options`'). InputError in TRL's names."""
        if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int)
                                       or train_size < 1):
            raise InputError(f"GRPOConfig.to_train_config: train_size {train_size!r}: expected the train "
                             f"dataset's row count, at least 1")
        # TRL's sampler drops an epoch's last incomplete generation batch
        per_epoch = None if train_size is None else max(1, train_size // self.prompts_per_step)
        if self.max_steps > 0:
            steps = self.max_steps
        elif train_size is None:
            raise InputError(f"GRPOConfig: max_steps {self.max_steps}: counting num_train_epochs "
                             f"{self.num_train_epochs} in steps needs the train dataset's size (to_train_config's "
                             f"train_size); or give max_steps")
        elif self.num_train_epochs <= 0:
            _fail(f"num_train_epochs {self.num_train_epochs}: must be > 0 (or give max_steps)")
        else:
            steps = max(1, math.ceil(self.num_train_epochs * per_epoch))
        return self._translate(steps=steps, per_epoch=per_epoch, model=model, use_peft=use_peft, lora=lora)

    # ------------------------------------------------------------------------------------------ translation

    def _translate(self, *, steps: int, per_epoch: int | None, model: str = "", use_peft: bool = False,
                   lora: dict | None = None) -> TrainConfig:
        values = dict(
            task="dataset", model=model, output_dir=self.output_dir, seed=self.seed, dtype=self._dtype(),
            device_memory=self.device_memory, steps=steps, prompts_per_step=self.prompts_per_step,
            group_size=self.num_generations, max_new_tokens=self.max_completion_length,
            max_prompt_length=self.max_prompt_length or 0, temperature=self.temperature, top_k=self.top_k or 0,
            top_p=self.top_p, reward_weights=self._reward_weights(), mask_truncated=self.mask_truncated_completions,
            lr=self.learning_rate, **self._schedule(steps), weight_decay=self.weight_decay,
            adam_beta1=self.adam_beta1, adam_beta2=self.adam_beta2, adam_epsilon=self.adam_epsilon,
            grad_clip=self.max_grad_norm or 0.0, mu=self.num_iterations, eps_low=self.epsilon,
            eps_high=self.epsilon if self.epsilon_high is None else self.epsilon_high, beta=self.beta,
            loss_type=self.loss_type, scale_rewards={"group": "std", "none": "none"}[self.scale_rewards],
            advantage_std="bessel",  # TRL divides by torch.std, over G - 1
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            generation_chunk_size=self.generation_chunk_size,
            gradient_checkpointing=(self.gradient_checkpointing if self.activation_checkpointing is None
                                    else self.activation_checkpointing),
            use_peft=use_peft, **_lora_fields(lora), eval_problems=1_000_000, eval_on_start=self.eval_on_start,
            per_device_eval_batch_size=self.per_device_eval_batch_size,
            eval_every=self._every("eval_strategy", self.logging_steps if self.eval_steps is None
                                   else self.eval_steps, steps, per_epoch),
            save_every=self._every("save_strategy", self.save_steps, steps, per_epoch),
            logging_steps=self._every("logging_strategy", self.logging_steps, steps, per_epoch),
            save_total_limit=self.save_total_limit or 0, report_to=self._report_to(),
            run_name=self.run_name or "", log_completions=self.log_completions,
            num_completions_to_print=self.num_completions_to_print or 0)
        try:
            return TrainConfig(**values)
        except OptionError as error:
            own = error.name in {f.name for f in dataclasses.fields(self)}
            name = _TRL_NAME.get(error.name, error.name if own else None)
            if name is None:
                raise InputError(f"GRPOConfig: {error}") from None
            raise InputError(f"GRPOConfig: {name} {error.value}: {error.problem}") from None
        except InputError as error:
            raise InputError(f"GRPOConfig: {error}") from None

    def _dtype(self) -> str:
        """TrainConfig's dtype: model_init_kwargs' dtype, else bf16 (the default) -> bfloat16, fp16 ->
        float16, neither -> auto. An explicit bf16 or fp16 must agree with model_init_kwargs' dtype."""
        if self.bf16 and self.fp16:
            _fail("bf16 and fp16 are both True: choose one")
        flag = "float16" if self.fp16 else "bfloat16" if self.bf16 else None
        model_dtype = self._model_dtype()
        if model_dtype is None:
            return flag or ("bfloat16" if self.bf16 is None else "auto")
        if flag is not None and flag != model_dtype:
            _fail(f"model_init_kwargs dtype {model_dtype!r} conflicts with {'fp16' if self.fp16 else 'bf16'}=True "
                  f"({flag}): give one of them")
        return model_dtype

    def _model_dtype(self) -> str | None:
        kwargs = self.model_init_kwargs or {}
        other = sorted(set(kwargs) - {"dtype", "torch_dtype", *_MODEL_KWARGS_NO_EFFECT})
        if other:
            _fail(f"model_init_kwargs {other}: wgrpo loads the checkpoint itself; only dtype (or torch_dtype) "
                  f"applies")
        given = {str(value).removeprefix("torch.") for key in ("dtype", "torch_dtype")
                 if (value := kwargs.get(key)) is not None}
        if len(given) > 1:
            _fail(f"model_init_kwargs dtype and torch_dtype differ ({', '.join(sorted(given))}): give one")
        dtype = next(iter(given), None)
        if dtype is not None and dtype not in DTYPE_CHOICES:
            _fail(f"model_init_kwargs dtype {dtype!r}: wgrpo holds weights as {', '.join(DTYPE_CHOICES)}")
        return dtype

    def _schedule(self, steps: int) -> dict[str, Any]:
        kind = _plain(self.lr_scheduler_type)
        kwargs = dict(self.lr_scheduler_kwargs or {})
        min_ratio = 0.0
        if kind == "cosine_with_min_lr":
            if ("min_lr_rate" in kwargs) == ("min_lr" in kwargs):
                _fail(f"lr_scheduler_type 'cosine_with_min_lr' needs one of min_lr_rate and min_lr in "
                      f"lr_scheduler_kwargs, got {self.lr_scheduler_kwargs}")
            min_ratio = (kwargs.pop("min_lr_rate") if "min_lr_rate" in kwargs
                         else kwargs.pop("min_lr") / self.learning_rate)
        if _SCHEDULES[kind] == "cosine" and kwargs.get("num_cycles", 0.5) == 0.5:
            kwargs.pop("num_cycles", None)  # the half cosine wave to the end, wgrpo's
        if kwargs:
            _fail(f"lr_scheduler_kwargs {kwargs}: wgrpo's {kind} schedule takes none of them")
        return {"lr_scheduler_type": _SCHEDULES[kind], "min_lr_ratio": min_ratio,
                "warmup_lr_steps": self._warmup_steps(steps)}

    def _warmup_steps(self, steps: int) -> int:
        if not 0 <= self.warmup_ratio <= 1:
            _fail(f"warmup_ratio {self.warmup_ratio}: must be in [0, 1]")
        if self.warmup_steps >= 1:
            return _whole("warmup_steps", self.warmup_steps)
        if self.warmup_steps < 0:
            _fail(f"warmup_steps {self.warmup_steps}: must be at least 0")
        return math.ceil((self.warmup_steps or self.warmup_ratio) * steps)

    def _every(self, strategy: str, value, steps: int, per_epoch: int | None) -> int:
        """Steps between two logs, evaluations or saves under `strategy`: 0 for 'no'; per epoch for 'epoch';
        else `value`, a ratio of the steps when below 1 (as transformers)."""
        kind, option = _plain(getattr(self, strategy)), strategy.replace("strategy", "steps")
        if kind == "no":
            return 0
        if kind == "epoch":
            if per_epoch is None:
                _fail(f"{strategy} 'epoch': needs the train dataset's size (to_train_config's train_size)")
            return per_epoch
        if value <= 0:
            _fail(f"{option} {value}: must be > 0 (below 1: a ratio of the steps)")
        return max(1, math.ceil(value * steps)) if value < 1 else _whole(option, value)

    def _report_to(self) -> str:
        names = ["none"] if self.report_to is None else (
            [self.report_to] if isinstance(self.report_to, str) else list(self.report_to))
        for name in names:
            if name not in _REPORTERS:
                _fail(f"report_to {name!r}: wgrpo reports to {', '.join(_REPORTERS)}")
        return ",".join(names) or "none"

    def _reward_weights(self) -> str:
        weights = self.reward_weights
        if weights is not None and (not isinstance(weights, (list, tuple)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights)):
            _fail(f"reward_weights {weights!r}: expected a list of finite numbers, one per reward function")
        return ",".join(repr(float(w)) for w in weights or ())


GRPOConfig.__init__ = reject_unknown_options(GRPOConfig.__init__)


@functools.cache
def _simply_typed(cls: type) -> tuple[str, ...]:
    """The fields whose type `fields.checked_field_value` checks (int, float, bool, str, or one of them | None)."""
    hints = typing.get_type_hints(cls)
    simple = (int, float, bool, str, int | None, float | None, bool | None, str | None)
    return tuple(f.name for f in dataclasses.fields(cls) if hints[f.name] in simple)


def _whole(option: str, value) -> int:
    if value != int(value):
        _fail(f"{option} {value}: must be a whole number of steps when at least 1 (below 1: a ratio of the steps)")
    return int(value)


def _json_dict(name: str, value):
    """A dict option given as a JSON string (as on transformers' command line) as a dict."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            _fail(f"{name} {value!r}: not a JSON object ({error})")
    if value is not None and not isinstance(value, dict):
        _fail(f"{name} {value!r}: expected a dict (or its JSON text)")
    return value


def _lora_fields(lora: dict | None) -> dict[str, Any]:
    """TrainConfig's LoRA fields of PEFT LoraConfig values; a list of target modules as a comma string."""
    values = dict(lora or {})
    unknown = sorted(set(values) - set(PEFT_LORA_KEYS))
    if unknown:
        raise InputError(f"peft_config: {unknown} not supported; wgrpo's LoRA takes {', '.join(PEFT_LORA_KEYS)}")
    modules = values.get("target_modules")
    if isinstance(modules, (list, tuple, set, frozenset)):  # PEFT keeps a list as a set
        values["target_modules"] = ",".join(sorted(modules) if isinstance(modules, (set, frozenset)) else modules)
    return {PEFT_LORA_KEYS[key]: value for key, value in values.items()}


def peft_lora_options(peft_config) -> dict[str, Any]:
    """`to_train_config`'s `lora` (PEFT's names: r, lora_alpha, lora_dropout, target_modules, use_rslora) of
    PEFT's or wgrpo's LoraConfig: target_modules None as PEFT's default for Llama/Qwen2 (q_proj,v_proj), a list
    or set as a sorted comma string. One InputError naming every other field away from PEFT's default (compared
    with `type(peft_config)()` where it builds, so later PEFT fields count too): wgrpo's adapters are plain LoRA."""
    values = peft_values(peft_config)
    kind = _plain(values.get("peft_type", "LORA"))
    if kind != "LORA" or not {"r", "lora_alpha"} <= set(values):
        raise InputError(f"peft_config {type(peft_config).__name__} ({kind}): wgrpo trains LoRA adapters; give "
                         f"peft.LoraConfig or wgrpo.engine.LoraConfig")
    refused = unsupported_peft_fields(peft_config)
    if refused:
        given = ", ".join(f"{name}={_short(value)}" for name, (value, _) in refused.items())
        plain_lora = ", ".join(f"{name}={_short(default)}" for name, (_, default) in refused.items())
        raise InputError(f"peft_config: {given}: not supported; wgrpo's LoRA implements "
                         f"{', '.join(PEFT_LORA_KEYS)}: leave the others at PEFT's defaults ({plain_lora})")
    targets = values.get("target_modules")
    if targets is None:
        targets = _PEFT_DEFAULT_TARGETS
    elif not isinstance(targets, str):
        targets = ",".join(sorted(targets))
    return {"r": values["r"], "lora_alpha": values["lora_alpha"], "lora_dropout": values.get("lora_dropout", 0.0),
            "target_modules": targets, "use_rslora": values.get("use_rslora", False)}


def _short(value) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 60 else text[:57] + "..."
