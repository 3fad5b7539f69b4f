"""`GRPOConfig`: TRL's configuration class for GRPO (its argument names, meanings and defaults) and its
translation into wgrpo's `TrainConfig` (`to_train_config`), so that a TRL script runs with only its import changed.

Owns: the options of TRL's GRPOConfig and transformers' TrainingArguments, of three kinds: those wgrpo models
(mapped onto TrainConfig fields; `CLI_ALIASES` names the 1:1 renames); those that do not apply (`NOT_APPLICABLE`:
TRL's default is accepted, another value refused with the reason); those with no effect here (`NO_EFFECT`: any
value, as TRL ignores a vLLM option without use_vllm). Any other name is refused before dataclass's TypeError,
with the nearest known one. Every error is one InputError in TRL's names, TrainConfig's range checks included.
wgrpo-only extras: `WGRPO_ONLY`; names of earlier TRL or transformers releases, still accepted: `FORMER_NAMES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from wgrpo.engine import InputError
from wgrpo.rl.train.config import DTYPE_CHOICES, OptionError, TrainConfig
from wgrpo.rl.train.fields import checked_field_value

__all__ = ["CLI_ALIASES", "FORMER_NAMES", "GRPOConfig", "NOT_APPLICABLE", "NO_EFFECT", "WGRPO_ONLY"]

# TRL option -> TrainConfig field, for the options that are the same setting under another name
CLI_ALIASES = {"learning_rate": "lr", "max_steps": "steps", "num_generations": "group_size",
               "max_completion_length": "max_new_tokens", "epsilon": "eps_low", "epsilon_high": "eps_high",
               "num_iterations": "mu", "max_grad_norm": "grad_clip", "mask_truncated_completions": "mask_truncated",
               "save_steps": "save_every", "eval_steps": "eval_every", "warmup_steps": "warmup_lr_steps"}
WGRPO_ONLY = ("generation_chunk_size", "device_memory")
# fields of earlier releases (TRL before 0.29, transformers before 5), kept for the scripts written for them
FORMER_NAMES = ("max_prompt_length", "warmup_ratio", "logging_dir", "use_liger_loss", "overwrite_output_dir",
                "save_safetensors", "wandb_log_unique_prompts", "vllm_device", "vllm_dtype",
                "vllm_enable_prefix_caching", "vllm_guided_decoding_regex")
# options of earlier transformers releases that GRPOConfig does not model at all
_ELSEWHERE = set("""evaluation_strategy no_cuda use_mps_device use_ipex jit_mode_eval fp16_opt_level
    half_precision_backend fp16_backend push_to_hub_model_id push_to_hub_organization push_to_hub_token mp_parameters
    ray_scope tpu_num_cores tpu_metrics_debug past_index torchdynamo use_legacy_prediction_loop group_by_length
    dispatch_batches split_batches include_inputs_for_metrics include_tokens_per_second fsdp_min_num_params
    fsdp_transformer_layer_cls_to_wrap xpu_backend sharded_ddp adafactor""".split())

_DATA = "the data order is a permutation per epoch seeded by seed, and a resumed run continues where it stopped"


def _kind(why: str, **accepted) -> dict[str, tuple[tuple, str]]:
    return {name: (values if isinstance(values, tuple) else (values,), why) for name, values in accepted.items()}


# option -> (TRL's default first, then any value that means the same; why another value does not apply)
NOT_APPLICABLE: dict[str, tuple[tuple, str]] = {
    **_kind("wgrpo samples with its own engine, not vLLM", use_vllm=False),
    **_kind("wgrpo samples with its own engine, not transformers' generate", cache_implementation=None,
            use_transformers_paged=False, use_transformers_continuous_batching=False,
            transformers_continuous_batching_config=None, generation_kwargs=(None, {}),
            chat_template_kwargs=(None, {}), min_p=(None, 0.0), repetition_penalty=1.0),
    **_kind("wgrpo evaluates pass@1, one greedy completion per prompt", num_generations_eval=None),
    **_kind("wgrpo does not call tools", max_tool_calling_iterations=None),
    **_kind("wgrpo's GRPO loss does not have it (loss_type names the variants it has)", delta=None,
            importance_sampling_level="token", top_entropy_quantile=1.0, entropy_coef=0.0, use_adaptive_entropy=False,
            multi_objective_aggregation="sum_then_normalize", sync_ref_model=False, off_policy_mask_threshold=None,
            neftune_noise_alpha=None, cast_lm_head_to_fp32=False),
    **_kind("wgrpo's kernels are WGSL, not torch", use_liger_kernel=False, use_liger_loss=(False, None),
            torch_compile=False, bf16_full_eval=False, fp16_full_eval=False, auto_find_batch_size=False),
    **_kind("wgrpo chooses its wgpu adapter itself (--device or $WGRPO_DEVICE)", use_cpu=False),
    **_kind("wgrpo's optimizer is AdamW, set by learning_rate, adam_* and weight_decay",
            optim=("adamw_torch_fused", "adamw_torch"), optim_args=None, optim_target_modules=None),
    **_kind("wgrpo trains on one device, in one process", deepspeed=None, fsdp=(None, "", []), fsdp_config=None,
            accelerator_config=None, parallelism_config=None, ds3_gather_for_generation=True),
    **_kind("wgrpo does not upload to the Hugging Face Hub (upload output_dir yourself)", push_to_hub=False,
            log_completions_hub_repo=None),
    **_kind(_DATA, data_seed=None, train_sampling_strategy="random", ignore_data_skip=False),
    **_kind("wgrpo keeps no best-metric checkpoint", load_best_model_at_end=False, metric_for_best_model=None),
    **_kind("wgrpo evaluates from the first step on (eval_steps sets how often)", eval_delay=0),
    **_kind("wgrpo runs no model code from the Hub", trust_remote_code=False),
}
# option -> TRL's default: any value is accepted, as it changes nothing here
NO_EFFECT: dict[str, Any] = {
    # without use_vllm, a loss type or an option that turns them on, TRL ignores these too
    **dict.fromkeys("""vllm_structured_outputs_regex vllm_server_base_url vllm_max_model_length
        vllm_importance_sampling_clip_min vllm_importance_sampling_cap vllm_guided_decoding_regex hub_token
        hub_private_repo hub_model_id hub_revision torch_compile_backend torch_compile_mode
        liger_kernel_config""".split()),
    **dict(vllm_mode="colocate", vllm_model_impl="vllm", vllm_enable_sleep_mode=False, vllm_server_host="0.0.0.0",
           vllm_server_port=8000, vllm_server_timeout=240.0, vllm_group_port=51216, vllm_gpu_memory_utilization=0.3,
           vllm_tensor_parallel_size=1, vllm_importance_sampling_correction=True,
           vllm_importance_sampling_mode="sequence_mask", vllm_importance_sampling_clip_max=3.0, vllm_device="auto",
           vllm_dtype="auto", vllm_enable_prefix_caching=True, sapo_temperature_neg=1.05, sapo_temperature_pos=1.0,
           vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0, entropy_coef_min=0.0,
           entropy_coef_max=1.0, entropy_coef_delta=0.005, entropy_target=0.2, ref_model_mixup_alpha=0.6,
           ref_model_sync_steps=512, hub_strategy="every_save", hub_always_push=False),
    # machinery wgrpo has no counterpart of (data loaders, processes, torch settings, console and log details)
    **dict.fromkeys("""gradient_checkpointing_kwargs activation_checkpointing_kwargs tf32 torch_empty_cache_steps
        router_aux_loss_coef disable_tqdm trackio_space_id trackio_bucket_id trackio_static_space_id
        eval_accumulation_steps greater_is_better dataloader_prefetch_factor dataloader_multiprocessing_context
        label_names ddp_find_unused_parameters ddp_bucket_cap_mb ddp_broadcast_buffers ddp_static_graph ddp_backend
        resume_from_checkpoint""".split()),
    **dict(use_cache=False, average_tokens_across_devices=True, label_smoothing_factor=0.0, pad_to_multiple_of="auto",
           logging_first_step=False, log_on_each_node=True, logging_nan_inf_filter=True,
           include_num_input_tokens_seen="no", log_level="passive", log_level_replica="warning",
           project="huggingface", log_multimodal=True, log_unique_prompts=False, wandb_log_unique_prompts=False,
           prediction_loss_only=False, eval_on_start=False, eval_do_concat_batches=True, eval_use_gather_object=False,
           include_for_metrics=[], batch_eval_metrics=False, save_only_model=False, save_on_each_node=False,
           save_safetensors=True, enable_jit_checkpoint=False, restore_callback_states_from_checkpoint=False,
           full_determinism=False, dataloader_drop_last=False, dataloader_num_workers=0, dataloader_pin_memory=True,
           dataloader_persistent_workers=False, dataloader_in_order=True, length_column_name="length",
           ddp_timeout=1800, debug="", skip_memory_metrics=True, do_train=False, do_eval=False, do_predict=False,
           local_rank=-1, overwrite_output_dir=False)}


_TRLOptions = dataclasses.make_dataclass(  # keyword-only: GRPOConfig's own fields keep TRL's positional order
    "_TRLOptions", [(name, Any, field(default_factory=list, repr=False, kw_only=True) if default == [] else
                     field(default=default, repr=False, kw_only=True))
                    for name, default in {**{n: v[0][0] for n, v in NOT_APPLICABLE.items()}, **NO_EFFECT}.items()])

_SCHEDULES = {"linear": "linear", "cosine": "cosine", "cosine_with_min_lr": "cosine", "constant": "constant",
              "constant_with_warmup": "constant_with_warmup"}
_REPORTERS = ("jsonl", "tensorboard", "wandb", "all", "none")
_CHOICES = {"logging_strategy": ("steps", "epoch"), "save_strategy": ("no", "steps", "epoch"),
            "eval_strategy": ("no", "steps", "epoch"), "loss_type": ("grpo", "bnpo", "dapo", "dr_grpo"),
            "lr_scheduler_type": tuple(_SCHEDULES)}
_MODEL_KWARGS_NO_EFFECT = ("attn_implementation", "use_cache", "low_cpu_mem_usage", "device_map")
_LORA_KEYS = {"r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
              "target_modules": "lora_target_modules", "use_rslora": "use_rslora"}
# TrainConfig field -> the option a TRL user gave, for TrainConfig's errors on fields with no 1:1 counterpart
_TRL_NAME = {**{train: trl for trl, train in CLI_ALIASES.items()}, "dtype": "bf16/fp16/model_init_kwargs",
             "min_lr_ratio": "lr_scheduler_kwargs min_lr_rate",
             **{train: f"peft_config {peft}" for peft, train in _LORA_KEYS.items()}}


def _plain(value):
    """An enum (transformers' SchedulerType, IntervalStrategy, OptimizerNames) as its value; else `value`."""
    return getattr(value, "value", value)


def _fail(message: str):
    raise InputError(f"GRPOConfig: {message}")


def _reject_unknown_options(init):
    """Wrap the dataclass __init__ so that a name GRPOConfig does not have is one InputError naming it and the
    nearest known option, instead of dataclass's TypeError."""
    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        known = [f.name for f in dataclasses.fields(type(self))]
        for name in kwargs:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                if name in _ELSEWHERE:
                    _fail(f"option {name!r} of earlier transformers releases does not apply to wgrpo{hint}")
                _fail(f"unknown option {name!r}{hint}")
        init(self, *args, **kwargs)
    return checked_init


@dataclass
class GRPOConfig(_TRLOptions):
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
    per_device_eval_batch_size: int = 8
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
        for name, (accepted, why) in NOT_APPLICABLE.items():
            if _plain(getattr(self, name)) not in accepted:
                _fail(f"{name} {getattr(self, name)!r} does not apply: {why}")
        if self.use_bias_correction_kl and self.beta > 0:
            _fail("use_bias_correction_kl True does not apply: wgrpo's KL penalty is the plain k3 estimate, "
                  "without the importance-ratio correction; set it to False to train with beta > 0")
        if self.remove_unused_columns:
            _fail("remove_unused_columns True does not apply: the reward functions receive every column of the "
                  "dataset as keyword arguments; leave it False")
        if not self.shuffle_dataset:
            _fail(f"shuffle_dataset {self.shuffle_dataset!r} does not apply: {_DATA}")
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
        num_train_epochs in steps (max_steps <= 0) and an 'epoch' strategy. `lora`: PEFT LoraConfig values (r,
        lora_alpha, lora_dropout, target_modules, use_rslora) for `use_peft`. InputError in TRL's names."""
        if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int)
                                       or train_size < 1):
            raise InputError(f"GRPOConfig.to_train_config: train_size {train_size!r}: expected the train "
                             f"dataset's row count, at least 1")
        per_epoch = None if train_size is None else max(1, math.ceil(train_size / self.prompts_per_step))
        if self.max_steps > 0:
            steps = self.max_steps
        elif train_size is None:
            raise InputError(f"GRPOConfig: max_steps {self.max_steps}: counting num_train_epochs "
                             f"{self.num_train_epochs} in steps needs the train dataset's size (to_train_config's "
                             f"train_size); or give max_steps")
        elif self.num_train_epochs <= 0:
            _fail(f"num_train_epochs {self.num_train_epochs}: must be > 0 (or give max_steps)")
        else:
            steps = max(1, math.ceil(self.num_train_epochs * train_size / self.prompts_per_step))
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
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            generation_chunk_size=self.generation_chunk_size,
            gradient_checkpointing=(self.gradient_checkpointing if self.activation_checkpointing is None
                                    else self.activation_checkpointing),
            use_peft=use_peft, **_lora_fields(lora), eval_problems=1_000_000,
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


GRPOConfig.__init__ = _reject_unknown_options(GRPOConfig.__init__)


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
    unknown = sorted(set(values) - set(_LORA_KEYS))
    if unknown:
        raise InputError(f"peft_config: {unknown} not supported; wgrpo's LoRA takes {', '.join(_LORA_KEYS)}")
    modules = values.get("target_modules")
    if isinstance(modules, (list, tuple, set, frozenset)):  # PEFT keeps a list as a set
        values["target_modules"] = ",".join(sorted(modules) if isinstance(modules, (set, frozenset)) else modules)
    return {_LORA_KEYS[key]: value for key, value in values.items()}
