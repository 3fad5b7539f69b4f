"""`GRPOConfig`: TRL's defaults, the translation of every option into a TrainConfig, and the errors (unknown
names, options that do not apply, batch arithmetic, dtype conflicts, TrainConfig's checks in TRL's names)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from wgrpo.engine import InputError
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.grpo_config import (CLI_ALIASES, FORMER_NAMES, NO_EFFECT, NOT_APPLICABLE, WGRPO_ONLY,
                                        GRPOConfig)

# TRL 1.16's GRPOConfig defaults (transformers 5's TrainingArguments under it), as read from its source
TRL_DEFAULTS = dict(
    output_dir="trainer_output", seed=42, learning_rate=1e-6, lr_scheduler_type="linear", lr_scheduler_kwargs=None,
    warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
    max_steps=-1, num_train_epochs=3.0, per_device_train_batch_size=8, gradient_accumulation_steps=1,
    num_generations=8, max_completion_length=512, temperature=1.0, top_p=1.0, top_k=0, beta=0.0, epsilon=0.2,
    epsilon_high=None, num_iterations=1, loss_type="dapo", scale_rewards="group", mask_truncated_completions=False,
    reward_weights=None, logging_strategy="steps", logging_steps=10, save_strategy="steps", save_steps=500,
    save_total_limit=None, eval_strategy="no", eval_steps=None, per_device_eval_batch_size=8, run_name=None,
    log_completions=False, num_completions_to_print=None, gradient_checkpointing=True, fp16=False, eval_on_start=False,
    model_init_kwargs=None, remove_unused_columns=False, shuffle_dataset=True, disable_dropout=False,
    use_vllm=False, optim="adamw_torch_fused", importance_sampling_level="token", top_entropy_quantile=1.0,
    repetition_penalty=1.0, min_p=None, delta=None, sync_ref_model=False, push_to_hub=False, deepspeed=None,
    use_cpu=False, torch_compile=False, vllm_mode="colocate", vllm_server_port=8000, ds3_gather_for_generation=True)


def train(config: GRPOConfig | None = None, train_size: int | None = 64, **options) -> TrainConfig:
    return (config or GRPOConfig(**options)).to_train_config(train_size=train_size)


# ---------------------------------------------------------------------------------------------- defaults


def test_defaults_are_trls():
    config = GRPOConfig()
    assert {name: getattr(config, name) for name in TRL_DEFAULTS} == TRL_DEFAULTS
    # resolved in __post_init__ as TRL resolves them: bf16 unless fp16, one generation batch per optimizer step
    assert (config.bf16, config.generation_batch_size, config.steps_per_generation) == (True, 8, 1)
    assert (config.report_to, config.generation_chunk_size, config.device_memory) == ("jsonl", 0, "")
    assert not config.evaluates_during_training


def test_the_defaults_translate_into_a_dataset_run():
    t = train(train_size=100)
    assert (t.task, t.model, t.dataset, t.reward_funcs, t.output_dir) == ("dataset", "", "", "", "trainer_output")
    assert (t.seed, t.lr, t.lr_scheduler_type, t.min_lr_ratio, t.warmup_lr_steps) == (42, 1e-6, "linear", 0.0, 0)
    assert (t.prompts_per_step, t.group_size, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (
        1, 8, 8, 1)
    assert t.steps == 300  # 3 epochs of 100 prompts, one prompt per step
    assert (t.max_new_tokens, t.max_prompt_length, t.temperature, t.top_k, t.top_p) == (512, 0, 1.0, 0, 1.0)
    assert (t.beta, t.eps_low, t.eps_high, t.mu, t.loss_type, t.scale_rewards) == (0.0, 0.2, 0.2, 1, "dapo", "std")
    assert (t.grad_clip, t.weight_decay, t.adam_beta1, t.adam_beta2, t.adam_epsilon) == (1.0, 0.0, 0.9, 0.999, 1e-8)
    assert (t.logging_steps, t.save_every, t.save_total_limit, t.eval_every, t.eval_problems) == (
        10, 500, 0, 0, 1_000_000)
    assert (t.report_to, t.run_name, t.log_completions, t.num_completions_to_print) == ("jsonl", "", False, 0)
    assert (t.dtype, t.gradient_checkpointing, t.mask_truncated, t.reward_weights, t.use_peft) == (
        "bfloat16", True, False, "", False)
    assert (t.advantage_std, t.eval_on_start, t.per_device_eval_batch_size) == ("bessel", False, 8)  # torch.std's


def test_the_aliases_are_renames_of_real_fields():
    grpo, trainer = {f.name for f in dataclasses.fields(GRPOConfig)}, {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(CLI_ALIASES) <= grpo and set(CLI_ALIASES.values()) <= trainer
    assert CLI_ALIASES["num_generations"] == "group_size" and CLI_ALIASES["learning_rate"] == "lr"
    assert set(WGRPO_ONLY) <= grpo and set(FORMER_NAMES) <= grpo
    assert set(NOT_APPLICABLE) <= grpo and set(NO_EFFECT) <= grpo
    assert "eval_on_start" not in NO_EFFECT  # it maps onto TrainConfig's eval_on_start


def test_every_field_is_one_of_trls():
    trl = pytest.importorskip("trl")
    theirs = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    assert sorted({f.name for f in dataclasses.fields(GRPOConfig)} - theirs - set(WGRPO_ONLY) - set(FORMER_NAMES)) == []


# ---------------------------------------------------------------------------------------------- mappings


@pytest.mark.parametrize("options,expected", [
    (dict(learning_rate=3e-6, seed=7, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6),
     dict(lr=3e-6, seed=7, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6)),
    (dict(max_grad_norm=None), dict(grad_clip=0.0)),
    (dict(max_grad_norm=0.5), dict(grad_clip=0.5)),
    (dict(max_steps=7), dict(steps=7)),
    (dict(num_train_epochs=1.5), dict(steps=96)),  # ceil(1.5 x 64 // 1)
    (dict(per_device_train_batch_size=4, gradient_accumulation_steps=4, num_generations=8, num_train_epochs=1),
     dict(prompts_per_step=2, group_size=8, per_device_train_batch_size=4, gradient_accumulation_steps=4, steps=32)),
    (dict(per_device_train_batch_size=6, num_generations=3, num_train_epochs=1),
     dict(prompts_per_step=2, steps=32)),
    (dict(generation_batch_size=8, steps_per_generation=1), dict(prompts_per_step=1)),
    (dict(max_prompt_length=128, max_completion_length=64), dict(max_prompt_length=128, max_new_tokens=64)),
    (dict(temperature=0.7, top_p=0.9, top_k=None), dict(temperature=0.7, top_p=0.9, top_k=0)),
    (dict(top_k=50), dict(top_k=50)),
    (dict(beta=0.04, epsilon=0.1), dict(beta=0.04, eps_low=0.1, eps_high=0.1)),
    (dict(epsilon_high=0.28), dict(eps_low=0.2, eps_high=0.28)),
    (dict(num_iterations=1), dict(mu=1)),
    (dict(eval_on_start=True, per_device_eval_batch_size=3), dict(eval_on_start=True, per_device_eval_batch_size=3)),
    (dict(loss_type="grpo"), dict(loss_type="grpo")),
    (dict(loss_type="dr_grpo", scale_rewards=False), dict(loss_type="dr_grpo", scale_rewards="none")),
    (dict(scale_rewards="none"), dict(scale_rewards="none")),
    (dict(scale_rewards=True), dict(scale_rewards="std")),
    (dict(mask_truncated_completions=True), dict(mask_truncated=True)),
    (dict(reward_weights=[1, 0.5]), dict(reward_weights="1.0,0.5")),
    (dict(save_total_limit=3, run_name="r1", log_completions=True, num_completions_to_print=2),
     dict(save_total_limit=3, run_name="r1", log_completions=True, num_completions_to_print=2)),
    (dict(gradient_checkpointing=False), dict(gradient_checkpointing=False)),
    (dict(gradient_checkpointing=False, activation_checkpointing=True), dict(gradient_checkpointing=True)),
    (dict(generation_chunk_size=16, device_memory="8G", output_dir="out"),
     dict(generation_chunk_size=16, device_memory="8G", output_dir="out")),
    (dict(output_dir=None), dict(output_dir="trainer_output")),
])
def test_options_map_onto_train_config(options, expected):
    t = train(**options)
    assert {name: getattr(t, name) for name in expected} == expected


@pytest.mark.parametrize("options,kind,min_ratio", [
    (dict(lr_scheduler_type="linear"), "linear", 0.0),
    (dict(lr_scheduler_type="cosine"), "cosine", 0.0),
    (dict(lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": 0.5}), "cosine", 0.0),
    (dict(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}), "cosine", 0.1),
    (dict(lr_scheduler_type="cosine_with_min_lr", learning_rate=1e-5, lr_scheduler_kwargs={"min_lr": 2.5e-6}),
     "cosine", 0.25),
    (dict(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs='{"min_lr_rate": 0.5}'), "cosine", 0.5),
    (dict(lr_scheduler_type="constant"), "constant", 0.0),
    (dict(lr_scheduler_type="constant_with_warmup"), "constant_with_warmup", 0.0),
])
def test_learning_rate_schedules(options, kind, min_ratio):
    t = train(**options)
    assert (t.lr_scheduler_type, t.min_lr_ratio) == (kind, pytest.approx(min_ratio))


def test_an_enum_schedule_and_strategy_read_as_their_values():
    enum = pytest.importorskip("transformers.trainer_utils")
    t = train(lr_scheduler_type=enum.SchedulerType.COSINE, save_strategy=enum.SaveStrategy.NO,
              eval_strategy=enum.IntervalStrategy.STEPS, eval_steps=5)
    assert (t.lr_scheduler_type, t.save_every, t.eval_every) == ("cosine", 0, 5)


@pytest.mark.parametrize("options,warmup", [
    (dict(warmup_steps=5), 5), (dict(warmup_steps=5.0), 5), (dict(warmup_ratio=0.1), 7),  # ceil(0.1 x 64)
    (dict(warmup_steps=0.25), 16), (dict(warmup_steps=3, warmup_ratio=0.5), 3), (dict(warmup_ratio=0.0), 0),
])
def test_warmup_steps_win_over_the_ratio(options, warmup):
    assert train(max_steps=64, **options).warmup_lr_steps == warmup


@pytest.mark.parametrize("options,expected", [
    (dict(logging_steps=0.1), dict(logging_steps=5)),  # ceil(0.1 x 50 steps)
    (dict(logging_steps=3), dict(logging_steps=3)),
    (dict(logging_strategy="epoch", max_steps=-1, num_train_epochs=1), dict(logging_steps=64)),
    (dict(save_strategy="no"), dict(save_every=0)),
    (dict(save_steps=0.5), dict(save_every=25)),
    (dict(save_steps=20), dict(save_every=20)),
    (dict(save_strategy="epoch", per_device_train_batch_size=16), dict(save_every=32)),  # 64 prompts, 2 per step
    (dict(eval_strategy="steps"), dict(eval_every=10)),  # eval_steps None: logging_steps
    (dict(eval_strategy="steps", eval_steps=4), dict(eval_every=4)),
    (dict(eval_strategy="steps", eval_steps=0.2), dict(eval_every=10)),
    (dict(eval_strategy="epoch"), dict(eval_every=64)),
    (dict(report_to=["tensorboard", "wandb"]), dict(report_to="tensorboard,wandb")),
    (dict(report_to="all"), dict(report_to="all")),
    (dict(report_to=None), dict(report_to="none")),
    (dict(report_to=[]), dict(report_to="none")),
])
def test_logging_saving_and_evaluation_intervals(options, expected):
    t = train(**{"max_steps": 50, **options})
    assert {name: getattr(t, name) for name in expected} == expected


@pytest.mark.parametrize("train_size,options,expected", [
    # TRL's sampler drops an epoch's last incomplete generation batch: 65 prompts, 2 a step, are 32 steps
    (65, dict(num_train_epochs=1), dict(steps=32)),
    (65, dict(num_train_epochs=1.5), dict(steps=48)),  # ceil(1.5 x 32), not ceil(1.5 x 65 / 2) = 49
    (65, dict(num_train_epochs=3, save_strategy="epoch", eval_strategy="epoch", logging_strategy="epoch"),
     dict(steps=96, save_every=32, eval_every=32, logging_steps=32)),
    (65, dict(max_steps=10, save_strategy="epoch"), dict(steps=10, save_every=32)),
    (64, dict(num_train_epochs=1, save_strategy="epoch"), dict(steps=32, save_every=32)),
    (1, dict(num_train_epochs=2, save_strategy="epoch"), dict(steps=2, save_every=1)),  # at least one step an epoch
])
def test_an_epoch_is_its_whole_generation_batches(train_size, options, expected):
    t = train(train_size=train_size, per_device_train_batch_size=16, **options)
    assert t.prompts_per_step == 2
    assert {name: getattr(t, name) for name in expected} == expected


def test_evaluates_during_training_follows_eval_strategy():
    assert GRPOConfig(eval_strategy="steps").evaluates_during_training
    assert GRPOConfig(eval_strategy="epoch").evaluates_during_training
    assert not GRPOConfig(eval_strategy="no").evaluates_during_training


@pytest.mark.parametrize("options,dtype,bf16", [
    (dict(), "bfloat16", True),
    (dict(fp16=True), "float16", False),
    (dict(bf16=False), "auto", False),
    (dict(bf16=True), "bfloat16", True),
    (dict(model_init_kwargs={"dtype": "float32"}), "float32", False),
    (dict(model_init_kwargs={"torch_dtype": "torch.bfloat16"}, bf16=True), "bfloat16", True),
    (dict(model_init_kwargs='{"dtype": "auto", "attn_implementation": "sdpa"}'), "auto", False),
    (dict(model_init_kwargs={"dtype": "float16"}, fp16=True), "float16", False),
    (dict(model_init_kwargs={"dtype": "float32"}, bf16=False), "float32", False),
])
def test_dtype_of_bf16_fp16_and_model_init_kwargs(options, dtype, bf16):
    config = GRPOConfig(**options)
    assert (train(config).dtype, config.bf16) == (dtype, bf16)
    assert train(dataclasses.replace(config, seed=1)).dtype == dtype  # a copy trains the same dtype


def test_a_torch_dtype_object_is_read_by_its_name():
    torch = pytest.importorskip("torch")
    assert train(model_init_kwargs={"dtype": torch.float16}).dtype == "float16"


def test_lora_values_map_onto_the_lora_fields():
    t = GRPOConfig().to_train_config(model="m", train_size=8, use_peft=True, lora=dict(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], use_rslora=True))
    assert (t.model, t.use_peft, t.lora_r, t.lora_alpha, t.lora_dropout, t.use_rslora) == ("m", True, 4, 8.0, 0.0, True)
    assert t.lora_target_modules == "q_proj,v_proj"
    assert GRPOConfig().to_train_config(train_size=8, use_peft=True, lora=dict(
        target_modules={"v_proj", "q_proj"})).lora_target_modules == "q_proj,v_proj"


def test_options_that_change_nothing_here_are_accepted():
    config = GRPOConfig("out", vllm_mode="server", vllm_server_port=9000, dataloader_num_workers=4,
                        hub_model_id="me/model", logging_first_step=True, disable_dropout=True,
                        optim="adamw_torch", use_liger_loss=None, remove_unused_columns=None, min_p=0.0)
    assert (config.output_dir, config.vllm_mode, config.dataloader_num_workers) == ("out", "server", 4)
    assert train(config).output_dir == "out"
    assert config.to_dict()["vllm_server_port"] == 9000 and config.to_dict()["learning_rate"] == 1e-6
    assert GRPOConfig(logging_dir="tb", warmup_ratio=0.1).logging_dir == "tb"
    assert GRPOConfig(beta=0.04, use_bias_correction_kl=False).beta == 0.04
    assert GRPOConfig(use_bias_correction_kl=True).use_bias_correction_kl  # no KL term: nothing to correct


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("options,message", [
    (dict(num_generation=4), "GRPOConfig: unknown option 'num_generation' (did you mean num_generations?)"),
    (dict(learnig_rate=1e-5), "GRPOConfig: unknown option 'learnig_rate' (did you mean learning_rate?)"),
    (dict(zzz_qqq=1), "GRPOConfig: unknown option 'zzz_qqq'"),
    (dict(no_cuda=True), "GRPOConfig: option 'no_cuda' of earlier transformers releases does not apply"),
])
def test_unknown_options_are_named_with_a_suggestion(options, message):
    with pytest.raises(InputError) as error:
        GRPOConfig(**options)
    assert str(error.value).startswith(message), str(error.value)


@pytest.mark.parametrize("options,message", [
    (dict(use_vllm=True), "GRPOConfig: use_vllm True does not apply: wgrpo samples with its own engine, not vLLM"),
    (dict(importance_sampling_level="sequence"), "importance_sampling_level 'sequence' does not apply"),
    (dict(top_entropy_quantile=0.2), "top_entropy_quantile 0.2 does not apply"),
    (dict(min_p=0.1), "min_p 0.1 does not apply"),
    (dict(repetition_penalty=1.1), "repetition_penalty 1.1 does not apply"),
    (dict(optim="sgd"), "optim 'sgd' does not apply: wgrpo's optimizer is AdamW"),
    (dict(delta=2.0), "delta 2.0 does not apply"),
    (dict(sync_ref_model=True), "sync_ref_model True does not apply"),
    (dict(deepspeed="ds.json"), "deepspeed 'ds.json' does not apply: wgrpo trains on one device"),
    (dict(push_to_hub=True), "push_to_hub True does not apply"),
    (dict(use_cpu=True), "use_cpu True does not apply"),
    (dict(torch_compile=True), "torch_compile True does not apply"),
    (dict(cache_implementation="static"), "cache_implementation 'static' does not apply"),
    (dict(use_liger_kernel=True), "use_liger_kernel True does not apply"),
    (dict(beta=0.04, use_bias_correction_kl=True), "use_bias_correction_kl True does not apply"),
    (dict(remove_unused_columns=True), "remove_unused_columns True does not apply: the reward functions"),
    (dict(shuffle_dataset=False), "shuffle_dataset False does not apply: the data order is a permutation"),
    (dict(loss_type="cispo"), "GRPOConfig: loss_type 'cispo': wgrpo has grpo, bnpo, dapo, dr_grpo"),
    (dict(loss_type="sapo"), "loss_type 'sapo': wgrpo has grpo, bnpo, dapo, dr_grpo"),
    (dict(scale_rewards="batch"), "GRPOConfig: scale_rewards 'batch': wgrpo scales by the group's std"),
    (dict(save_strategy="best"), "GRPOConfig: save_strategy 'best': wgrpo has no, steps, epoch"),
    (dict(logging_strategy="no"), "GRPOConfig: logging_strategy 'no': wgrpo has steps, epoch"),
    (dict(max_completion_length=None), "GRPOConfig: max_completion_length None: wgrpo needs a completion length"),
    (dict(lr_scheduler_type="polynomial"), "GRPOConfig: lr_scheduler_type 'polynomial': wgrpo has linear, cosine"),
    (dict(lr_scheduler_type="cosine_with_min_lr"), "'cosine_with_min_lr' needs one of min_lr_rate and min_lr"),
    (dict(lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": 1}), "lr_scheduler_kwargs {'num_cycles"),
    (dict(lr_scheduler_kwargs={"power": 2}), "wgrpo's linear schedule takes none of them"),
    (dict(lr_scheduler_kwargs="{nope"), "GRPOConfig: lr_scheduler_kwargs '{nope': not a JSON object"),
    (dict(warmup_steps=2.5), "GRPOConfig: warmup_steps 2.5: must be a whole number of steps"),
    (dict(warmup_steps=-1), "GRPOConfig: warmup_steps -1: must be at least 0"),
    (dict(warmup_ratio=1.5), "GRPOConfig: warmup_ratio 1.5: must be in [0, 1]"),
    (dict(logging_steps=0), "GRPOConfig: logging_steps 0: must be > 0"),
    (dict(save_steps=2.5), "GRPOConfig: save_steps 2.5: must be a whole number"),
    (dict(eval_strategy="steps", eval_steps=-1), "GRPOConfig: eval_steps -1: must be > 0"),
    (dict(report_to="mlflow"), "GRPOConfig: report_to 'mlflow': wgrpo reports to jsonl, tensorboard, wandb"),
    (dict(reward_weights="1,2"), "GRPOConfig: reward_weights '1,2': expected a list of finite numbers"),
    (dict(reward_weights=[1, float("nan")]), "reward_weights [1, nan]: expected a list of finite numbers"),
    (dict(learning_rate="1e-5"), "GRPOConfig: learning_rate = '1e-5': expected a number"),
    (dict(num_generations=2.0), "GRPOConfig: num_generations = 2.0: expected an integer"),
    (dict(bf16="yes"), "GRPOConfig: bf16 = 'yes': expected true or false"),
    (dict(eval_on_start=1), "GRPOConfig: eval_on_start = 1: expected true or false"),
    (dict(per_device_eval_batch_size=0), "GRPOConfig: per_device_eval_batch_size 0: must be at least 1"),
])
def test_errors_name_the_option(options, message):
    with pytest.raises(InputError) as error:
        GRPOConfig(**options)  # at construction, as TRL: before any model loads
    assert message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("options,message", [
    (dict(num_generations=1), "GRPOConfig: num_generations 1: must be at least 2"),
    (dict(per_device_train_batch_size=0), "GRPOConfig: per_device_train_batch_size 0: must be at least 1"),
    (dict(per_device_train_batch_size=4), "GRPOConfig: generation_batch_size 4 (per_device_train_batch_size 4 x "
                                          "gradient_accumulation_steps 1): must be divisible by num_generations 8"),
    (dict(generation_batch_size=16), "GRPOConfig: generation_batch_size 16: wgrpo takes one optimizer step per "
                                     "generation batch, so it must be per_device_train_batch_size x "
                                     "gradient_accumulation_steps = 8"),
    (dict(steps_per_generation=4), "GRPOConfig: steps_per_generation 4: wgrpo takes one optimizer step per "
                                   "generation batch, so it must be gradient_accumulation_steps = 1"),
])
def test_batch_arithmetic(options, message):
    with pytest.raises(InputError) as error:
        GRPOConfig(**options)
    assert message in str(error.value), str(error.value)


@pytest.mark.parametrize("options,message", [
    (dict(bf16=True, fp16=True), "GRPOConfig: bf16 and fp16 are both True: choose one"),
    (dict(bf16=True, model_init_kwargs={"dtype": "float32"}),
     "GRPOConfig: model_init_kwargs dtype 'float32' conflicts with bf16=True (bfloat16): give one of them"),
    (dict(fp16=True, model_init_kwargs={"torch_dtype": "bfloat16"}), "conflicts with fp16=True (float16)"),
    (dict(model_init_kwargs={"dtype": "int8"}), "model_init_kwargs dtype 'int8': wgrpo holds weights as auto"),
    (dict(model_init_kwargs={"dtype": "float16", "torch_dtype": "bfloat16"}), "dtype and torch_dtype differ"),
    (dict(model_init_kwargs={"revision": "main"}), "model_init_kwargs ['revision']: wgrpo loads the checkpoint"),
    (dict(model_init_kwargs=3), "GRPOConfig: model_init_kwargs 3: expected a dict"),
])
def test_dtype_conflicts(options, message):
    with pytest.raises(InputError) as error:
        GRPOConfig(**options)
    assert message in str(error.value), str(error.value)


@pytest.mark.parametrize("options,message", [
    (dict(top_p=1.5), "GRPOConfig: top_p 1.5: must be in (0, 1]"),
    (dict(epsilon=1.0), "GRPOConfig: epsilon 1.0: must be in [0, 1)"),
    (dict(epsilon_high=-0.1), "GRPOConfig: epsilon_high -0.1: must be >= 0"),
    (dict(learning_rate=0), "GRPOConfig: learning_rate 0.0: must be > 0"),
    (dict(num_iterations=0), "GRPOConfig: num_iterations 0: must be at least 1"),
    (dict(num_iterations=1.0), "GRPOConfig: num_iterations = 1.0: expected an integer"),
    (dict(max_completion_length=0), "GRPOConfig: max_completion_length 0: must be at least 1"),
    (dict(max_grad_norm=-1.0), "GRPOConfig: max_grad_norm -1.0: must be >= 0"),
    (dict(temperature=0.0), "GRPOConfig: temperature 0.0: must be > 0"),
    (dict(seed=-1), "GRPOConfig: seed -1: must be at least 0"),
    (dict(adam_beta2=1.0), "GRPOConfig: adam_beta2 1.0: must be in [0, 1)"),
    (dict(max_steps=5, warmup_steps=-0.5), "GRPOConfig: warmup_steps -0.5: must be at least 0"),
    (dict(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 2}),
     "GRPOConfig: lr_scheduler_kwargs min_lr_rate 2.0: must be in [0, 1]"),
])
def test_train_config_errors_are_reported_in_trl_names(options, message):
    with pytest.raises(InputError) as error:
        GRPOConfig(**options)
    assert message in str(error.value), str(error.value)


@pytest.mark.parametrize("iterations", [2, 4])
def test_more_than_one_iteration_is_refused_as_its_steps_would_count_differently(iterations):
    with pytest.raises(InputError) as error:
        GRPOConfig(num_iterations=iterations, max_steps=10)
    message = str(error.value)
    assert message.startswith(f"GRPOConfig: num_iterations {iterations}: not supported: wgrpo's step is one "
                              f"generation batch followed by its num_iterations updates, while TRL's global_step "
                              f"counts every optimizer step"), message
    assert "max_steps, logging/save/eval steps and the learning-rate schedule" in message
    assert "`wgrpo train --mu N`, whose steps count generation batches" in message and "\n" not in message


def test_to_train_config_errors():
    with pytest.raises(InputError, match=r"GRPOConfig: max_steps -1: counting num_train_epochs 3.0 in steps needs "
                                         r"the train dataset's size"):
        GRPOConfig().to_train_config()
    with pytest.raises(InputError, match="GRPOConfig: save_strategy 'epoch': needs the train dataset's size"):
        GRPOConfig(save_strategy="epoch", max_steps=4).to_train_config()
    with pytest.raises(InputError, match="train_size 0: expected the train dataset's row count"):
        GRPOConfig().to_train_config(train_size=0)
    with pytest.raises(InputError, match="GRPOConfig: num_train_epochs 0: must be > 0"):
        GRPOConfig(num_train_epochs=0).to_train_config(train_size=8)
    with pytest.raises(InputError, match="GRPOConfig: peft_config r 0: must be at least 1"):
        GRPOConfig(max_steps=2).to_train_config(use_peft=True, lora={"r": 0})
    with pytest.raises(InputError, match=r"peft_config: \['bias'\] not supported"):
        GRPOConfig(max_steps=2).to_train_config(use_peft=True, lora={"bias": "all"})
    assert GRPOConfig(max_steps=4).to_train_config().steps == 4  # max_steps needs no train_size


def test_to_dict_has_every_option_and_round_trips():
    config = GRPOConfig(learning_rate=2e-6, reward_weights=[1.0, 2.0], vllm_mode="server")
    values = config.to_dict()
    assert set(values) == {f.name for f in dataclasses.fields(GRPOConfig)}
    assert GRPOConfig(**values) == config
    assert math.isclose(values["learning_rate"], 2e-6) and values["reward_weights"] == [1.0, 2.0]
