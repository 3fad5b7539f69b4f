"""`TrainConfig` and the config helpers: type checks, option ranges, reward weights, absolute paths, and what a
resumed run may change. No device needed."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.grpo import GRPOLossConfig
from wgrpo.rl.train.config import (DEMO_TASK_OPTIONS, OptionError, TrainConfig, check_field_types,
                                   checked_field_value, read_saved_config, resume_config, saved_config)
from wgrpo.rl.train.task_options import build_task, parse_options, parse_weights
from wgrpo.rl.train.fields import field_default, file_value, option_flag

# ---------------------------------------------------------------------------------------------- types


@pytest.mark.parametrize("options,message", [
    ({"steps": 1.5}, "TrainConfig: steps = 1.5: expected an integer"),
    ({"steps": True}, "TrainConfig: steps = True: expected an integer"),
    ({"lr": True}, "TrainConfig: lr = True: expected a number"),
    ({"lr": "1e-4"}, "TrainConfig: lr = '1e-4': expected a number"),
    ({"grad_clip": float("nan")}, "TrainConfig: grad_clip = nan: expected a finite number"),
    ({"temperature": float("inf")}, "TrainConfig: temperature = inf: expected a finite number"),
    ({"dynamic_sampling": "no"}, "TrainConfig: dynamic_sampling = 'no': expected true or false"),
    ({"dynamic_sampling": 1}, "TrainConfig: dynamic_sampling = 1: expected true or false"),
    ({"model": 3}, "TrainConfig: model = 3: expected a string"),
    ({"task_options": 3}, "TrainConfig: task_options = 3: expected a string of the form 'key=value,...' or a table"),
    ({"task_options": {"ops": ["+", "-"]}}, "a table's values must be numbers, strings or booleans, got ops = ['+', '-']"),
    ({"loss_type": "ppo"}, "TrainConfig: loss_type = 'ppo': expected one of 'grpo', 'bnpo', 'dapo', 'dr_grpo'"),
    ({"sandbox": "none"}, "TrainConfig: sandbox = 'none': expected one of 'auto', 'bwrap', 'unshare', 'limits'"),
])
def test_field_types_are_checked(options, message):
    with pytest.raises(InputError) as error:
        TrainConfig(**options)
    assert message in str(error.value)


def test_numbers_are_stored_as_their_fields_type_and_tables_as_option_strings():
    config = TrainConfig(steps=np.int64(7), lr=1, task_options={"digits": 1, "ops": "+", "instructions": False},
                         reward_weights={"accuracy": 1, "format": 0.5})
    assert type(config.steps) is int and config.steps == 7
    assert type(config.lr) is float and config.lr == 1.0
    assert config.task_options == "digits=1,ops=+,instructions=false"
    assert config.task_kwargs() == {"digits": 1, "ops": "+", "instructions": False}
    assert config.reward_weights == "accuracy=1,format=0.5"


def test_the_helper_works_on_any_dataclass_and_names_the_source():
    @dataclass(frozen=True)
    class Other:
        size: int = field(default=1, metadata={"help": "a size"})
        out: str | None = field(default=None, metadata={"help": "a path"})
        scale: float = field(default=1.0, metadata={"help": "a scale"})

    check_field_types(Other(out="x", scale=2))
    other = Other(scale=2)
    check_field_types(other)
    assert type(other.scale) is float  # converted in place, frozen or not
    with pytest.raises(InputError, match=r"^Other: out = 5: expected a string$"):
        check_field_types(Other(out=5))
    with pytest.raises(InputError, match=r"^run\.toml: size = 2\.5: expected an integer$"):
        check_field_types(Other(size=2.5), where="run.toml")
    assert checked_field_value(Other, "size", 3, "run.toml") == 3
    with pytest.raises(InputError, match=r"^--size 1\.5: expected an integer$"):
        checked_field_value(Other, "size", 1.5, as_option=True)


@pytest.mark.parametrize("name,value,message", [
    ("dynamic_sampling", "no", 'dynamic_sampling = "no": expected true or false'),
    ("steps", True, "steps = true: expected an integer"),
    ("grad_clip", float("nan"), "grad_clip = nan: expected a finite number"),
    ("loss_type", "ppo", 'loss_type = "ppo": expected one of "grpo", "bnpo", "dapo", "dr_grpo"'),
    ("task_options", {"digits": 1, "ops": ["+"]}, 'task_options = {digits = 1, ops = ["+"]}: a table\'s values '
     'must be numbers, strings or booleans, got ops = ["+"]'),
])
def test_a_files_values_are_shown_as_the_file_writes_them(name, value, message):
    with pytest.raises(InputError) as error:
        checked_field_value(TrainConfig, name, value, "run.toml")
    assert str(error.value) == f"run.toml: {message}"


def test_field_helpers():
    assert option_flag("group_size") == "--group-size"
    by_name = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert field_default(by_name["steps"]) == 50 and field_default(by_name["task_options"]) == ""
    assert file_value({"digits": 1, "a b": [True, 1.5, float("-inf")], "s": 'say "x"'}) == (
        '{digits = 1, "a b" = [true, 1.5, -inf], s = "say \\"x\\""}')


# ---------------------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("options,message", [
    ({"group_size": 1}, "--group-size 1: must be at least 2: GRPO's advantages compare the completions of a group"),
    ({"grad_clip": -1.0}, "--grad-clip -1.0: must be >= 0 (0 disables clipping)"),
    ({"min_lr_ratio": 5}, "--min-lr-ratio 5.0: must be in [0, 1]"),
    ({"min_lr_ratio": -0.1}, "--min-lr-ratio -0.1: must be in [0, 1]"),
    ({"save_every": -1}, "--save-every -1: must be at least 0"),
    ({"eval_every": -1}, "--eval-every -1: must be at least 0"),
    ({"steps": 0}, "--steps 0: must be at least 1"),
    ({"top_p": 1.5}, "--top-p 1.5: must be in (0, 1]"),
    ({"lr": 0}, "--lr 0.0: must be > 0"),
    ({"seed": -1}, "--seed -1: must be at least 0"),
    ({"reward_weights": "accuracy=abc"}, "--reward-weights accuracy=abc: the weight of 'accuracy' is 'abc', not a "
                                         "number"),
    ({"reward_weights": "accuracy=1,format=nan"}, "--reward-weights accuracy=1,format=nan: the weight of 'format' "
                                                  "is 'nan', not a finite number"),
    ({"reward_weights": "accuracy"}, "--reward-weights accuracy: expected name=weight pairs separated by commas, "
                                     "got 'accuracy'"),
    ({"reward_weights": "accuracy=1,accuracy=2"}, "--reward-weights accuracy=1,accuracy=2: 'accuracy' is given "
                                                  "twice"),
    ({"task_options": "digits"}, "--task-options digits: expected key=value pairs separated by commas, got 'digits'"),
    ({"task_options": "digits=1, ops=+, digits=2"}, "--task-options digits=1, ops=+, digits=2: 'digits' is given "
                                                    "twice"),
])
def test_bad_values_are_named_by_option(options, message):
    with pytest.raises(OptionError) as error:
        TrainConfig(**options)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
    name = next(iter(options))
    assert (error.value.name, error.value.value) == (name, options[name])  # what names it by file and key


def test_repeated_keys_are_refused_by_the_parsers_too():
    with pytest.raises(InputError, match=r"^--reward-weights: 'accuracy' is given twice in 'accuracy=1,accuracy=2'$"):
        parse_weights("accuracy=1,accuracy=2")
    with pytest.raises(InputError, match=r"^--task-options: 'ops' is given twice in 'ops=\+,ops=-'$"):
        parse_options("ops=+,ops=-")


def test_a_range_error_names_the_file_and_key_when_the_value_came_from_one():
    with pytest.raises(OptionError) as error:
        TrainConfig(group_size=1)
    assert str(error.value.in_file("run.toml")) == (
        "run.toml: group_size = 1: must be at least 2: GRPO's advantages compare the completions of a group, so a "
        "group of one carries no signal")
    table = {"accuracy": "abc", "format": 0.1}
    with pytest.raises(OptionError) as error:
        TrainConfig(reward_weights=table)
    assert str(error.value.in_file("run.toml", table)) == (
        "run.toml: reward_weights = {accuracy = \"abc\", format = 0.1}: the weight of 'accuracy' is 'abc', not a "
        "number")


def test_the_loss_configs_checks_are_input_errors_naming_the_option():
    for options, message in [({"eps_low": 1.0}, "--eps-low 1.0: GRPOLossConfig.eps_low must be in [0, 1)"),
                             ({"eps_high": -1.0}, "--eps-high -1.0: GRPOLossConfig.eps_high must be >= 0"),
                             ({"beta": -0.5}, "--beta -0.5: GRPOLossConfig.beta must be >= 0"),
                             ({"loss_type": "ppo"}, "--loss-type 'ppo': GRPOLossConfig.loss_type must be one of "
                                                    "grpo, bnpo, dapo, dr_grpo"),
                             ({"scale_rewards": "max"}, "--scale-rewards 'max': GRPOLossConfig.scale_rewards must "
                                                        "be std or none"),
                             ({"adv_eps": 0.0}, "GRPOLossConfig: adv_eps 0.0: must be > 0")]:
        with pytest.raises(InputError) as error:
            GRPOLossConfig(**options)
        assert str(error.value) == message


def test_empty_task_options_are_the_tasks_own_but_the_demo_keeps_its_problems():
    assert TrainConfig().task_options == ""
    assert TrainConfig().with_demo_task_options().task_options == DEMO_TASK_OPTIONS
    assert build_task("arithmetic", DEMO_TASK_OPTIONS).digits == 2
    for options in ({"model": "m"}, {"resume": "r"}, {"task": "countdown"}, {"task_options": "digits=3"}):
        config = TrainConfig(**options)
        assert config.with_demo_task_options() is config, options
    assert build_task("countdown", TrainConfig(task="countdown").task_options).name == "countdown"


def test_reward_weights_are_checked_against_the_task():
    task = build_task("arithmetic", "digits=1,ops=+")
    assert TrainConfig().weights(task) == task.default_weights
    assert TrainConfig(reward_weights="accuracy=1, format=0.25").weights(task) == {"accuracy": 1.0, "format": 0.25}
    with pytest.raises(InputError, match=r"^--reward-weights accuracy=1,length=2: \['length'\] name no reward of "
                                         r"task 'arithmetic'; it gives \['accuracy', 'format'\]$"):
        TrainConfig(reward_weights="accuracy=1,length=2").weights(task)
    assert parse_weights("accuracy=-1") == {"accuracy": -1.0}  # a penalty is a weight too


def test_task_errors_name_the_task(tmp_path):
    with pytest.raises(InputError, match="unknown task 'chess'"):
        build_task("chess", "")
    with pytest.raises(InputError, match="no option"):
        build_task("arithmetic", "colour=blue")
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(InputError, match=str(missing)):
        build_task("gsm8k", f"path={missing}")
    with pytest.raises(InputError, match="choose the sandbox with --sandbox"):
        build_task("code", "path=x.jsonl,sandbox=limits")


def test_the_sandbox_option_reaches_the_code_task(tmp_path):
    data = tmp_path / "code.jsonl"
    data.write_text(json.dumps({"prompt": "Write f returning 1.", "tests": ["assert f() == 1"]}) + "\n")
    config = TrainConfig(task="code", task_options=f"path={data}", sandbox="limits")
    assert config.task_kwargs() == {"path": str(data), "sandbox": "limits"}
    assert build_task(config.task, config.task_options, config.sandbox).sandbox == "limits"
    assert TrainConfig(task="arithmetic", sandbox="limits").task_kwargs() == TrainConfig().task_kwargs()


# ---------------------------------------------------------------------------------------------- paths


def test_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    hub = TrainConfig(model="Qwen/Qwen2.5-0.5B-Instruct").absolute_paths()
    assert hub.model == "Qwen/Qwen2.5-0.5B-Instruct"  # a Hub id stays one
    config = TrainConfig(model="m", output_dir="out", resume="out/checkpoint-2", task="gsm8k",
                         task_options="path=data/train.jsonl, eval_path=/abs/eval.jsonl,template=plain")
    absolute = config.absolute_paths()
    assert (absolute.model, absolute.output_dir, absolute.resume) == (
        str(tmp_path / "m"), str(tmp_path / "out"), str(tmp_path / "out" / "checkpoint-2"))
    assert absolute.task_kwargs() == {"path": str(tmp_path / "data" / "train.jsonl"), "eval_path": "/abs/eval.jsonl",
                                      "template": "plain"}
    assert TrainConfig().absolute_paths().model == ""  # "no model" stays no model
    options = "digits=2, ops=+"
    assert TrainConfig(task_options=options).absolute_paths().task_options == options  # no path: as written
    assert config.model == "m"  # the config itself is unchanged


# ---------------------------------------------------------------------------------------------- resume


def saved_run(tmp_path, **options) -> dict:
    base = dict(model=str(tmp_path / "start"), output_dir=str(tmp_path / "run"), steps=3, group_size=8)
    return dataclasses.asdict(TrainConfig(**{**base, **options}).absolute_paths())


def test_resume_keeps_the_saved_run_and_changes_only_its_cadence(tmp_path):
    saved = saved_run(tmp_path, warmup_lr_steps=1, max_new_tokens=24)
    checkpoint = tmp_path / "run" / "checkpoint-3"
    config, changes = resume_config(checkpoint, {"resume": str(checkpoint)}, saved=saved)
    assert changes == []
    assert config == dataclasses.replace(TrainConfig(**saved), resume=str(checkpoint))
    config, changes = resume_config(checkpoint, {"steps": 6, "save_every": 2, "eval_every": 0}, saved=saved)
    assert (config.steps, config.save_every, config.eval_every, config.max_new_tokens) == (6, 2, 0, 24)
    assert changes == ["changed: steps 3 -> 6 (the cosine learning-rate decay of the remaining steps now ends at "
                       "step 6 instead of 3)", "changed: eval_every 10 -> 0", "changed: save_every 0 -> 2"]


def test_resume_refuses_any_other_change_by_name(tmp_path):
    saved = saved_run(tmp_path)
    checkpoint = str(tmp_path / "run" / "final")
    with pytest.raises(InputError) as error:
        resume_config(checkpoint, {"group_size": 4, "steps": 6}, saved=saved)
    assert str(error.value) == (f"--group-size 4: the run in {checkpoint} was trained with 8; a resumed run keeps "
                                f"its configuration (start a new run from {checkpoint} with --model to change it)")
    with pytest.raises(InputError, match=r"^--dynamic-sampling: the run in .* was trained with "
                                         r"--no-dynamic-sampling; --lr 0\.001: the run in .* was trained with "
                                         r"0\.0001; a resumed run keeps"):
        resume_config(checkpoint, {"dynamic_sampling": True, "lr": 1e-3}, saved=saved)
    with pytest.raises(InputError, match="^--eval-problems 20: "):  # what an evaluation measures stays
        resume_config(checkpoint, {"eval_problems": 20}, saved=saved)
    with pytest.raises(InputError, match=r"^--steps 0: must be at least 1$"):
        resume_config(checkpoint, {"steps": 0}, saved=saved)


def test_options_equal_to_the_saved_ones_are_fine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = saved_run(tmp_path, task_options="digits=2,ops=+")
    overrides = {"group_size": 8, "model": "start", "output_dir": "run", "task_options": "digits=2, ops=+",
                 "lr": 0.0001, "dynamic_sampling": False}
    config, changes = resume_config("run/final", overrides, saved=saved)
    assert changes == [] and config.resume == str(tmp_path / "run" / "final")
    config, changes = resume_config("run/final", {"output_dir": "elsewhere"}, saved=saved)
    assert config.output_dir == str(tmp_path / "elsewhere")
    assert changes == [f"changed: output_dir {tmp_path / 'run'} -> {tmp_path / 'elsewhere'}"]


def test_a_saved_config_is_checked_and_named(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    path = checkpoint / "trainer_config.json"
    with pytest.raises(InputError, match="not a training checkpoint, trainer_config.json is missing"):
        resume_config(checkpoint)
    with pytest.raises(InputError, match="no such checkpoint directory"):
        resume_config(tmp_path / "nowhere")
    path.write_text('{"steps": 3,')
    with pytest.raises(InputError, match=f"^{path}: not valid JSON"):
        resume_config(checkpoint)
    with pytest.raises(InputError, match=f"^{path}: not valid JSON"):
        read_saved_config(checkpoint, required=False)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match=f"^{path}: expected a JSON object of training options, got list"):
        resume_config(checkpoint)
    path.write_text(json.dumps({**saved_run(tmp_path), "steps": "3"}))
    with pytest.raises(InputError, match=f'^{path}: steps = "3": expected an integer$'):
        resume_config(checkpoint)
    path.write_text(json.dumps({**saved_run(tmp_path), "group_size": 1}))
    with pytest.raises(InputError, match=f"^{path}: group_size = 1: must be at least 2"):
        resume_config(checkpoint)
    path.write_text(json.dumps({**saved_run(tmp_path), "colour": "blue"}))
    with pytest.raises(InputError, match=f"^{path}: unknown options \\['colour'\\]"):
        resume_config(checkpoint)
    path.write_text(json.dumps(saved_run(tmp_path)))
    config, _ = resume_config(checkpoint)
    assert config.resume == str(checkpoint)
    assert read_saved_config(tmp_path, required=False) == {}


def test_a_saved_config_missing_an_option_is_refused_by_name(tmp_path):
    """A missing option would take today's default: a resumed run would train differently, silently."""
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    older = saved_run(tmp_path, lr=3e-3)
    del older["lr"], older["sandbox"]
    (checkpoint / "trainer_config.json").write_text(json.dumps(older))
    with pytest.raises(InputError) as error:
        resume_config(checkpoint, {"steps": 6})
    assert str(error.value) == (
        f"{checkpoint / 'trainer_config.json'}: missing options ['sandbox', 'lr'] (written by another version of "
        f"wgrpo?); a resumed run takes every option from its checkpoint, none from today's defaults")
    with pytest.raises(InputError, match=r"^x\.json: missing options \['lr'\]"):
        saved_config(TrainConfig, {k: v for k, v in saved_run(tmp_path).items() if k != "lr"}, "x.json")


def test_old_relative_paths_resolve_where_the_run_is_resumed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = {**saved_run(tmp_path), "model": "start", "output_dir": "run"}
    config, _ = resume_config("run/final", saved=saved)
    assert (config.model, config.output_dir) == (str(tmp_path / "start"), str(tmp_path / "run"))
    assert os.path.isabs(config.resume)


def test_memory_options_are_checked_by_name():
    with pytest.raises(InputError, match=r"--per-device-train-batch-size 3 x --gradient-accumulation-steps 5 = 15: "
                                         r"must be the completions of a step, .* = 64"):
        TrainConfig(per_device_train_batch_size=3, gradient_accumulation_steps=5)
    with pytest.raises(OptionError, match="--generation-chunk-size 12: must be a multiple of --group-size 8"):
        TrainConfig(generation_chunk_size=12)
    with pytest.raises(OptionError, match="--gradient-accumulation-steps 65: must be at most"):
        TrainConfig(gradient_accumulation_steps=65)
    with pytest.raises(OptionError, match="--lora-target-modules q_proj,foo: unknown module 'foo'"):
        TrainConfig(use_peft=True, lora_target_modules="q_proj,foo")
    with pytest.raises(OptionError, match="--lora-r 0: must be at least 1"):
        TrainConfig(lora_r=0)
    TrainConfig(lora_target_modules="foo")  # not checked without --use-peft: no adapters are made


def test_scale_out_options_are_checked_by_name():
    with pytest.raises(OptionError, match="--rollout-workers -1: must be at least 0"):
        TrainConfig(rollout_workers=-1)
    with pytest.raises(OptionError, match="--async-rollouts 2: must be 0 .synchronous. or 1"):
        TrainConfig(rollout_workers=2, async_rollouts=2)
    with pytest.raises(OptionError, match="--async-rollouts 1: needs --rollout-workers 1 or more"):
        TrainConfig(async_rollouts=1)
    TrainConfig(rollout_workers=3, async_rollouts=1, ray_address="auto")


@pytest.mark.parametrize("options, ranges", [
    ({}, [(0, 12)]),
    ({"per_device_train_batch_size": 5}, [(0, 5), (5, 10), (10, 12)]),
    ({"gradient_accumulation_steps": 5}, [(0, 2), (2, 5), (5, 7), (7, 10), (10, 12)]),
    ({"per_device_train_batch_size": 4, "gradient_accumulation_steps": 3}, [(0, 4), (4, 8), (8, 12)]),
])
def test_micro_batches_cover_the_rollout_in_order(options, ranges):
    config = TrainConfig(prompts_per_step=3, group_size=4, **options)
    assert config.micro_batches(12) == ranges


def test_a_config_saved_before_options_were_renamed_or_added_resumes_as_it_trained(tmp_path):
    """Earlier versions' trainer_config.json: renamed options under their new names, options added since at the
    defaults that reproduce what those runs did."""
    from wgrpo.rl.train.config import ADDED_OPTIONS, RENAMED_OPTIONS

    older = saved_run(tmp_path)
    for old, new in RENAMED_OPTIONS.items():
        older[old] = older.pop(new)
    older["warmup_steps"] = 77  # the warm-up's supervised steps, today's sft_steps
    for name in set(ADDED_OPTIONS) - set(RENAMED_OPTIONS.values()):
        older.pop(name)
    config = saved_config(TrainConfig, older, "old.json")
    assert config.sft_steps == 77 and config.generation_chunk_size == 0
    assert (config.lr_scheduler_type, config.report_to, config.logging_steps, config.dataset) == \
        ("cosine", "jsonl", 1, "")
    assert config.warmup_lr_steps == older["warmup_lr_steps"]


def test_reward_weights_by_position_follow_the_tasks_reward_names():
    task = build_task("arithmetic", "digits=1")
    assert tuple(task.reward_names) == ("format", "accuracy")
    assert TrainConfig(reward_weights="0.2,1").weights(task) == {"format": 0.2, "accuracy": 1.0}
    assert parse_weights("1, 0.5") == [1.0, 0.5]
    with pytest.raises(InputError, match=r"--reward-weights 1,2,3: 3 weights for the 2 rewards of task "
                                         r"'arithmetic', format, accuracy"):
        TrainConfig(reward_weights="1,2,3").weights(task)


@pytest.mark.parametrize("options, message", [
    ({"reward_funcs": "accuracy"}, "--reward-funcs accuracy: applies to --dataset"),
    ({"dataset": "d.jsonl"}, "--dataset d.jsonl: needs --reward-funcs"),
    ({"dataset": "d.jsonl", "reward_funcs": "accuracy", "task": "gsm8k"}, "--dataset d.jsonl: replaces --task"),
    ({"eval_dataset": "e.jsonl"}, "--eval-dataset e.jsonl: applies to --dataset"),
    ({"logging_steps": 0}, "--logging-steps 0: must be at least 1"),
    ({"adam_beta2": 1.0}, "--adam-beta2 1.0: must be in [0, 1)"),
    ({"lr_scheduler_type": "polynomial"}, "lr_scheduler_type"),
])
def test_dataset_and_logging_options_are_checked_by_name(options, message):
    with pytest.raises(InputError, match=re.escape(message)):
        TrainConfig(**options)


def test_a_dataset_run_records_its_task_as_the_dataset(tmp_path):
    config = TrainConfig(dataset=str(tmp_path / "d.jsonl"), reward_funcs="accuracy").with_demo_task_options()
    assert config.task == "dataset" and config.task_options == ""
