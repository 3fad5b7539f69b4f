"""`from wgrpo import GRPOConfig, GRPOTrainer`: a TRL script with its imports changed trains on a list of dicts
with two reward functions that read dataset columns, logs each function's metrics, saves a checkpoint that loads,
and resumes with `train(resume_from_checkpoint=True)` exactly where an uninterrupted run would be."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wgrpo.engine import InputError
from tests.tiny_checkpoint import save_tiny_checkpoint

DATASET = [{"prompt": f"Compute {a} + {b}.\n<think>", "answer": str(a + b), "difficulty": "easy" if a < 5 else
            "hard"} for a, b in [(3, 4), (8, 6), (0, 3), (5, 2), (1, 1), (7, 9)]]


# TRL-shaped reward functions: every other column arrives as a keyword list, one entry per completion
def correct(prompts, completions, completion_ids, answer, **kwargs):
    return [1.0 if text.strip().startswith(gold) or gold in text else 0.0 for text, gold in zip(completions, answer)]


def brevity(prompts, completions, completion_ids, difficulty, **kwargs):
    # not applicable to the hard problems: None, which the mean leaves out
    return [None if level == "hard" else 1.0 - len(ids) / 8 for ids, level in zip(completion_ids, difficulty)]


@pytest.fixture(autouse=True)
def no_curves(monkeypatch):
    monkeypatch.setattr("wgrpo.rl.train.trainer.GRPOLoop._plot", lambda self: None)


@pytest.fixture
def model_dir(tmp_path, device):
    return save_tiny_checkpoint(tmp_path / "model", device)


def script_args(output_dir, max_steps: int):
    from wgrpo import GRPOConfig  # the only change to a TRL script: this import

    return GRPOConfig(output_dir=str(output_dir), learning_rate=5e-3, lr_scheduler_type="constant",
                      per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4,
                      max_completion_length=8, max_steps=max_steps, beta=0.04, logging_steps=1, save_steps=1,
                      report_to="none", bf16=False, gradient_checkpointing=False, seed=3, reward_weights=[1.0, 0.5])


def trl_script(model_dir, output_dir, max_steps: int, resume=None):
    from wgrpo import GRPOTrainer

    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[correct, brevity],
                          args=script_args(output_dir, max_steps), train_dataset=DATASET)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def rows(output_dir) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_trl_script_trains_logs_saves_and_resumes(model_dir, tmp_path):
    from wgrpo import load_pretrained

    whole = trl_script(model_dir, tmp_path / "whole", 3)
    logged = rows(tmp_path / "whole")
    assert [row["step"] for row in logged] == [0, 1, 2, 3]  # no eval_dataset: row 0 holds the memory estimate
    for row in logged[1:]:
        for key in ("reward", "reward_std", "rewards/correct/mean", "rewards/correct/std", "rewards/brevity/mean",
                    "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std", "kl",
                    "clip_ratio/low_mean", "clip_ratio/high_mean", "learning_rate", "grad_norm", "entropy"):
            assert key in row and np.isfinite(row[key]), (row["step"], key)
    assert whole.state.global_step == 3 and [entry["step"] for entry in whole.state.log_history] == [1, 2, 3]
    assert all(row["learning_rate"] == 5e-3 for row in logged[1:])

    model, tokenizer = load_pretrained(tmp_path / "whole" / "final")  # the checkpoint is a model directory
    assert tokenizer is not None and model.config.vocab_size == whole.model.config.vocab_size

    # the same script stopped after 2 steps, then run again for 3 with resume_from_checkpoint=True
    trl_script(model_dir, tmp_path / "split", 2)
    resumed = trl_script(model_dir, tmp_path / "split", 3, resume=True)
    assert resumed.state.global_step == 3
    split = rows(tmp_path / "split")
    assert [row["step"] for row in split] == [0, 1, 2, 3]
    for key in ("reward", "rewards/correct/mean", "rewards/brevity/mean", "loss", "kl", "grad_norm"):
        assert split[3][key] == logged[3][key], key
    for name, value in whole.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)


def test_weights_combine_the_functions_and_none_is_left_out(model_dir, tmp_path):
    from wgrpo import GRPOTrainer

    args = script_args(tmp_path / "run", 1)
    args.log_completions = True
    GRPOTrainer(model=str(model_dir), reward_funcs=[correct, brevity], args=args, train_dataset=DATASET).train()
    step = rows(tmp_path / "run")[1]
    table = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert len(table) == 8 and {row["step"] for row in table} == {1}

    def values(name):
        return np.array([np.nan if row[name] is None else row[name] for row in table], np.float64)

    correct_values, brevity_values = values("rewards/correct"), values("rewards/brevity")
    # brevity is None on the hard problems: its mean is over the easy ones only, and the combined reward counts
    # it 0 there (TRL's nansum of weight x value)
    assert np.isnan(brevity_values).any() and not np.isnan(brevity_values).all()
    assert step["rewards/correct/mean"] == pytest.approx(correct_values.mean())
    assert step["rewards/brevity/mean"] == pytest.approx(np.nanmean(brevity_values))
    assert values("reward") == pytest.approx(correct_values + 0.5 * np.nan_to_num(brevity_values))
    assert step["reward"] == pytest.approx(values("reward").mean())


def test_resume_without_a_checkpoint_is_refused(model_dir, tmp_path):
    from wgrpo import GRPOTrainer

    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[correct, brevity],
                          args=script_args(tmp_path / "none", 1),
                          train_dataset=DATASET)
    with pytest.raises(InputError, match="resume_from_checkpoint=True: no checkpoint in output_dir"):
        trainer.train(resume_from_checkpoint=True)


def test_what_wgrpo_cannot_do_is_refused_by_name(model_dir, tmp_path):
    from wgrpo import GRPOTrainer

    args = script_args(tmp_path / "x", 1)
    with pytest.raises(InputError, match="optimizers must be"):
        GRPOTrainer(model=str(model_dir), reward_funcs=correct, args=args, train_dataset=DATASET,
                    optimizers=(object(), None))
    with pytest.raises(InputError, match="train_dataset is required"):
        GRPOTrainer(model=str(model_dir), reward_funcs=correct, args=args)
    with pytest.raises(InputError, match="model must be a checkpoint directory or a Hub id"):
        GRPOTrainer(model=object(), reward_funcs=correct, args=args, train_dataset=DATASET)
