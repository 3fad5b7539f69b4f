"""GRPOTrainer's logging and wiring: callbacks at the steps transformers calls them (a stop request ends the run
with a checkpoint), `logging_steps` windows, TensorBoard scalars under TRL's names, held-out evaluation on
`eval_dataset`, and LoRA through `peft_config` with the base as the reference."""

from __future__ import annotations

import json

import pytest

from tests.rl.train.test_grpo_trainer import DATASET, brevity, correct, model_dir, no_curves, script_args  # noqa: F401


def trainer(model_dir, args, **kwargs):
    from wgrpo import GRPOTrainer

    return GRPOTrainer(model=str(model_dir), reward_funcs=[correct, brevity], args=args, train_dataset=DATASET,
                       **kwargs)


def test_callbacks_hear_the_run_and_can_stop_it(model_dir, tmp_path):
    from wgrpo import TrainerCallback

    heard = []

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            heard.append(("begin", state.global_step))

        def on_step_end(self, args, state, control, **kwargs):
            heard.append(("step", state.global_step))
            if state.global_step == 2:
                control.should_training_stop = True  # the run ends after this step, with a checkpoint

        def on_log(self, args, state, control, logs=None, **kwargs):
            heard.append(("log", state.global_step, round(logs["learning_rate"], 6), "rewards/correct/mean" in logs))

        def on_save(self, args, state, control, **kwargs):
            heard.append(("save", state.global_step))

        def on_train_end(self, args, state, control, **kwargs):
            heard.append(("end", state.global_step))

    args = script_args(tmp_path / "out", 4)
    args.logging_steps, args.save_steps = 2, 500
    run = trainer(model_dir, args, callbacks=[Recorder])  # a class is instantiated, as transformers does
    run.train()
    assert heard == [("begin", 0), ("step", 1), ("step", 2), ("log", 2, 5e-3, True), ("save", 2), ("end", 2)]
    assert (tmp_path / "out" / "checkpoint-2").is_dir() and not (tmp_path / "out" / "final").exists()
    assert run.state.log_history[-1]["step"] == 2  # the window of steps 1-2, averaged


def test_tensorboard_gets_the_logged_means_under_trls_names(model_dir, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    args = script_args(tmp_path / "out", 2)
    args.report_to = ["tensorboard"]
    trainer(model_dir, args).train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    events = accumulator.EventAccumulator(str(tmp_path / "out" / "runs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{name}" for name in ("reward", "reward_std", "rewards/correct/mean", "rewards/brevity/mean", "kl",
                                         "learning_rate")} <= tags  # transformers' chart names
    assert [(e.step, e.value) for e in events.Scalars("train/reward")] == \
        [(row["step"], pytest.approx(row["reward"], rel=1e-6)) for row in rows[1:]]


def test_eval_dataset_is_evaluated_every_eval_steps(model_dir, tmp_path):
    args = script_args(tmp_path / "out", 2)
    args.eval_strategy, args.eval_steps, args.eval_on_start = "steps", 1, True
    run = trainer(model_dir, args, eval_dataset=DATASET[:3])
    run.train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # the start (eval_on_start), then every step
        assert {"eval_pass@1", "eval_reward", "eval_rewards/correct/mean", "eval_rewards/brevity/mean"} <= set(row)
    again = run.evaluate()
    assert again["eval_reward"] == pytest.approx(rows[-1]["eval_reward"])  # greedy: the same decoding


def test_lora_through_peft_config_has_no_reference_copy_and_saves_an_adapter(model_dir, tmp_path):
    from wgrpo import LoraConfig, load_pretrained

    run = trainer(model_dir, script_args(tmp_path / "out", 1), peft_config=LoraConfig(r=4, lora_alpha=8,
                                                                                      target_modules="all-linear"))
    assert run.loop.reference is None and run.model.adapters is not None  # beta 0.04: the base is the reference
    run.train()
    final = tmp_path / "out" / "final"
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    model, _ = load_pretrained(final)  # base + adapter
    assert model.adapters is not None and model.adapters.config.r == 4


def test_events_carry_the_model_and_epochs_follow_the_data(model_dir, tmp_path):
    from wgrpo import TrainerCallback

    heard = []

    class Recorder(TrainerCallback):
        def on_init_end(self, args, state, control, **kwargs):
            heard.append("init_end")

        def on_epoch_begin(self, args, state, control, **kwargs):
            heard.append(("epoch_begin", state.global_step))

        def on_epoch_end(self, args, state, control, **kwargs):
            heard.append(("epoch_end", state.global_step, state.epoch))

        def on_step_end(self, args, state, control, model=None, processing_class=None, optimizer=None, **kwargs):
            assert model is not None and processing_class is not None and optimizer is not None
            assert args.learning_rate == 5e-3  # the GRPOConfig given

    args = script_args(tmp_path / "out", 4)  # 6 problems, 2 per step: an epoch every 3 steps
    trainer(model_dir, args, callbacks=[Recorder()]).train()
    assert heard == ["init_end", ("epoch_begin", 0), ("epoch_end", 3, 1.0), ("epoch_begin", 3)]


def test_the_logged_window_keeps_the_last_learning_rate_and_resume_keeps_the_history(model_dir, tmp_path):
    args = script_args(tmp_path / "out", 2)
    args.lr_scheduler_type, args.logging_steps, args.save_steps = "linear", 2, 1
    first = trainer(model_dir, args)
    first.train()
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    (logged,) = first.state.log_history
    assert logged["step"] == 2 and logged["learning_rate"] == rows[2]["learning_rate"] != rows[1]["learning_rate"]
    assert logged["reward"] == pytest.approx((rows[1]["reward"] + rows[2]["reward"]) / 2)  # a mean over the window

    args.max_steps = 3
    resumed = trainer(model_dir, args)
    resumed.train(resume_from_checkpoint=True)
    assert [entry["step"] for entry in resumed.state.log_history] == [2, 3]  # the checkpoint's, then this run's


def test_the_end_of_an_open_r1_style_script(model_dir, tmp_path, capsys):
    from wgrpo import TrainerState

    run = trainer(model_dir, script_args(tmp_path / "out", 1))
    metrics = run.train().metrics
    metrics["train_samples"] = len(DATASET)
    run.log_metrics("train", metrics)
    run.save_metrics("train", metrics)
    run.save_state()
    run.save_model(tmp_path / "out")
    assert "***** train metrics *****" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "train_results.json").read_text())["train_samples"] == 6
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["train_samples"] == 6
    assert TrainerState.load_from_json(tmp_path / "out" / "trainer_state.json").global_step == 1
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()


def test_a_resume_that_changes_the_run_names_the_option_as_grpoconfig_does(model_dir, tmp_path):
    from wgrpo import InputError

    trainer(model_dir, script_args(tmp_path / "out", 1)).train()
    args = script_args(tmp_path / "out", 2)
    args.learning_rate = 1e-3
    with pytest.raises(InputError) as error:
        trainer(model_dir, args).train(resume_from_checkpoint=True)
    message = str(error.value)
    assert message.startswith("learning_rate=0.001: the run in ") and "--" not in message
    assert message.endswith("start a new run (another output_dir, or no resume_from_checkpoint) to change it)")


def test_a_transformers_tokenizer_as_processing_class_brings_its_chat_template(model_dir, tmp_path):
    """TRL scripts pass `processing_class=AutoTokenizer.from_pretrained(model)`: its chat template renders the
    conversational prompts and is saved with the checkpoints."""
    transformers = pytest.importorskip("transformers")
    from wgrpo import GRPOTrainer, load_pretrained

    given = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    given.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    seen = []

    def chat(prompts, completions, completion_ids, **kwargs):
        seen.extend((prompt[0]["role"], completion[0]["role"]) for prompt, completion in zip(prompts, completions))
        return [1.0 if completion[0]["content"].strip() else 0.0 for completion in completions]

    rows = [{"prompt": [{"role": "user", "content": row["prompt"]}]} for row in DATASET]
    args = script_args(tmp_path / "out", 1)
    args.reward_weights = None
    run = GRPOTrainer(model=str(model_dir), reward_funcs=[chat], args=args, train_dataset=rows,
                      processing_class=given)
    run.train()
    assert seen and set(seen) == {("user", "assistant")}
    _, saved = load_pretrained(tmp_path / "out" / "final")
    assert saved.chat_template == given.chat_template


def test_save_model_keeps_what_the_output_dir_holds_beside_the_model(model_dir, tmp_path):
    run = trainer(model_dir, script_args(tmp_path / "out", 1))
    run.train()
    (tmp_path / "out" / "README.md").write_text("# my model card\n")
    run.save_model()
    names = set(p.name for p in (tmp_path / "out").iterdir())
    assert {"README.md", "metrics.jsonl", "final", "model.safetensors", "config.json", "tokenizer.json"} <= names
