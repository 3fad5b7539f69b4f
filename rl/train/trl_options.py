"""The TRL, transformers and PEFT options that `GRPOConfig` accepts but does not map onto a TrainConfig field.

Owns the tables: `NOT_APPLICABLE` (TRL's default accepted, another value refused with the reason),
`NO_EFFECT` (any value, as TRL ignores a vLLM option without use_vllm), `FORMER_NAMES` (fields of earlier TRL or
transformers releases, still accepted), `ELSEWHERE` (options of earlier transformers releases that GRPOConfig does
not model), the PEFT LoraConfig fields wgrpo's LoRA maps (`PEFT_LORA_KEYS`) or ignores (`PEFT_BOOKKEEPING`) and
the defaults of those it refuses (`PEFT_LORA_DEFAULTS`); `TRLOptions`, the keyword-only dataclass of the
NOT_APPLICABLE and NO_EFFECT fields that GRPOConfig extends; and the checks over them: `check_not_applicable`
`reject_unknown_options` (an unknown name as one InputError with the nearest known one) and
`unsupported_peft_fields` (the fields of a LoraConfig that wgrpo's LoRA would silently ignore).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import field
from typing import Any, Mapping

from wgrpo.engine import InputError

__all__ = ["DATA_ORDER", "ELSEWHERE", "FORMER_NAMES", "NOT_APPLICABLE", "NO_EFFECT", "PEFT_BOOKKEEPING",
           "PEFT_LORA_DEFAULTS", "PEFT_LORA_KEYS", "TRLOptions", "check_not_applicable", "peft_values", "plain",
           "reject_unknown_options", "unsupported_peft_fields"]

# fields of earlier releases (TRL before 0.29, transformers before 5), kept for the scripts written for them
FORMER_NAMES = ("max_prompt_length", "warmup_ratio", "logging_dir", "use_liger_loss", "overwrite_output_dir",
                "save_safetensors", "wandb_log_unique_prompts", "vllm_device", "vllm_dtype",
                "vllm_enable_prefix_caching", "vllm_guided_decoding_regex")
# options of earlier transformers releases that GRPOConfig does not model at all
ELSEWHERE = frozenset("""evaluation_strategy no_cuda use_mps_device use_ipex jit_mode_eval fp16_opt_level
    half_precision_backend fp16_backend push_to_hub_model_id push_to_hub_organization push_to_hub_token mp_parameters
    ray_scope tpu_num_cores tpu_metrics_debug past_index torchdynamo use_legacy_prediction_loop group_by_length
    dispatch_batches split_batches include_inputs_for_metrics include_tokens_per_second fsdp_min_num_params
    fsdp_transformer_layer_cls_to_wrap xpu_backend sharded_ddp adafactor""".split())

DATA_ORDER = "the data order is a permutation per epoch seeded by seed, and a resumed run continues where it stopped"


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
    **_kind(DATA_ORDER, data_seed=None, train_sampling_strategy="random", ignore_data_skip=False),
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
           prediction_loss_only=False, eval_do_concat_batches=True, eval_use_gather_object=False,
           include_for_metrics=[], batch_eval_metrics=False, save_only_model=False, save_on_each_node=False,
           save_safetensors=True, enable_jit_checkpoint=False, restore_callback_states_from_checkpoint=False,
           full_determinism=False, dataloader_drop_last=False, dataloader_num_workers=0, dataloader_pin_memory=True,
           dataloader_persistent_workers=False, dataloader_in_order=True, length_column_name="length",
           ddp_timeout=1800, debug="", skip_memory_metrics=True, do_train=False, do_eval=False, do_predict=False,
           local_rank=-1, overwrite_output_dir=False)}

# PEFT LoraConfig field -> TrainConfig field: the LoRA that wgrpo implements
PEFT_LORA_KEYS = {"r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
                  "target_modules": "lora_target_modules", "use_rslora": "use_rslora"}
# PEFT LoraConfig fields that describe the config, not the adapters it trains
PEFT_BOOKKEEPING = frozenset({"task_type", "peft_type", "peft_version", "base_model_name_or_path", "revision",
                              "inference_mode", "auto_mapping", "runtime_config"})
# PEFT's defaults of the LoraConfig fields wgrpo refuses at another value, for a config whose type cannot be
# built without arguments (the type's own defaults win when it can: they name the fields of later releases too)
PEFT_LORA_DEFAULTS: dict[str, Any] = dict(
    bias="none", use_dora=False, modules_to_save=None, init_lora_weights=True, rank_pattern={}, alpha_pattern={},
    exclude_modules=None, layers_to_transform=None, layers_pattern=None, lora_bias=False, target_parameters=None,
    fan_in_fan_out=False, megatron_config=None, loftq_config={}, use_qalora=False, trainable_token_indices=None,
    eva_config=None, corda_config=None, layer_replication=None, alora_invocation_tokens=None)

# keyword-only: GRPOConfig's own fields keep TRL's positional order
TRLOptions = dataclasses.make_dataclass(
    "TRLOptions", [(name, Any, field(default_factory=list, repr=False, kw_only=True) if default == [] else
                    field(default=default, repr=False, kw_only=True))
                   for name, default in {**{n: v[0][0] for n, v in NOT_APPLICABLE.items()}, **NO_EFFECT}.items()])
TRLOptions.__doc__ = "The options of TRL's GRPOConfig that wgrpo accepts without a TrainConfig counterpart."


def plain(value):
    """An enum (transformers' SchedulerType, IntervalStrategy, OptimizerNames) as its value; else `value`."""
    return getattr(value, "value", value)


def check_not_applicable(config) -> None:
    """InputError naming the first NOT_APPLICABLE option of `config` at a value that does not mean TRL's default."""
    for name, (accepted, why) in NOT_APPLICABLE.items():
        if plain(getattr(config, name)) not in accepted:
            raise InputError(f"{type(config).__name__}: {name} {getattr(config, name)!r} does not apply: {why}")


def reject_unknown_options(init):
    """Wrap a config dataclass's __init__ so that a name it does not have is one InputError naming it and the
    nearest known option, instead of dataclass's TypeError."""
    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        known = [f.name for f in dataclasses.fields(type(self))]
        for name in kwargs:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                what = (f"option {name!r} of earlier transformers releases does not apply to wgrpo"
                        if name in ELSEWHERE else f"unknown option {name!r}")
                raise InputError(f"{type(self).__name__}: {what}{hint}")
        init(self, *args, **kwargs)
    return checked_init


def peft_values(config) -> dict[str, Any]:
    """A PEFT config's fields by name: a dataclass's fields, a mapping's items, else the object's attributes."""
    if dataclasses.is_dataclass(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return dict(config) if isinstance(config, Mapping) else dict(vars(config))


def unsupported_peft_fields(peft_config) -> dict[str, tuple[Any, Any]]:
    """Field -> (value, PEFT's default) of each field of the LoraConfig `peft_config` that wgrpo's LoRA does not
    implement (neither PEFT_LORA_KEYS nor PEFT_BOOKKEEPING) at a value other than its default. The defaults are
    `type(peft_config)()`'s where it builds without arguments, so fields of later PEFT releases count too, over
    PEFT_LORA_DEFAULTS."""
    try:
        defaults = {**PEFT_LORA_DEFAULTS, **peft_values(type(peft_config)())}
    except Exception:  # noqa: BLE001 - a type that needs arguments: PEFT's defaults as known here
        defaults = dict(PEFT_LORA_DEFAULTS)
    return {name: (value, defaults[name]) for name, value in peft_values(peft_config).items()
            if name not in PEFT_LORA_KEYS and name not in PEFT_BOOKKEEPING and name in defaults
            and not _at_default(value, defaults[name])}


def _at_default(value, default) -> bool:
    """Whether a PEFT field's `value` means its default; an empty list, set or dict for None means it too."""
    empty = (None, "", [], (), {}, set(), frozenset())
    try:
        return bool(value == default) or (value in empty and default in empty)
    except (TypeError, ValueError):  # a value whose == is no bool (an array)
        return False
