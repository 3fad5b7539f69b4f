"""`wgrpo train --dataset data.jsonl --reward-funcs rewards.py:f,g`: a user's own data and reward functions from
the shell, with TRL's option names as aliases; then `--resume` continues it."""

from __future__ import annotations

import json

import pytest

from tests.tiny_checkpoint import save_tiny_checkpoint
from wgrpo.tools.cli import build_parser, main

REWARDS = '''
def correct(prompts, completions, completion_ids, answer, **kwargs):
    return [1.0 if gold in text else 0.0 for text, gold in zip(completions, answer)]


def short(prompts, completions, completion_ids, **kwargs):
    return [-len(ids) / 8 for ids in completion_ids]
'''


def exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.fixture
def files(tmp_path, device):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Compute {a} + {b}.\n<think>", "answer": str(a + b)}) + "\n"
                            for a, b in [(3, 4), (8, 6), (0, 3), (5, 2)]))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps({"prompt": "Compute 1 + 1.\n<think>", "answer": "2"}) + "\n")
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(REWARDS)
    return {"model": save_tiny_checkpoint(tmp_path / "model", device), "data": data, "eval": held_out,
            "rewards": rewards}


def argv(files, output, steps: int) -> list[str]:
    return ["train", "--model", str(files["model"]), "--dataset", str(files["data"]), "--eval-dataset",
            str(files["eval"]), "--reward-funcs", "my_rewards.py:correct,short", "--reward-weights", "1,0.5",
            "--output-dir", str(output), "--max-steps", str(steps), "--num-generations", "4",
            "--generation-batch-size", "8", "--max-completion-length", "8", "--learning-rate", "5e-3",
            "--warmup-steps", "0", "--eval-steps", "0", "--save-steps", "1"]


def test_a_dataset_and_reward_functions_from_the_shell_train_and_resume(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("wgrpo.rl.train.trainer.GRPOLoop._plot", lambda self: None)
    output = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # the reward file named relative to here
    assert exit_code(argv(files, output, 1)) == 0
    err = capsys.readouterr().err
    assert f"reward functions correct, short from {files['rewards']}" in err  # user code is named as it loads
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1]
    assert {"rewards/correct/mean", "rewards/short/mean", "reward", "reward_std"} <= set(rows[1])
    assert {"eval_pass@1", "eval_rewards/correct/mean", "eval_rewards/short/mean"} <= set(rows[0]) & set(rows[1])
    saved = json.loads((output / "final" / "trainer_config.json").read_text())
    assert (saved["task"], saved["group_size"], saved["prompts_per_step"], saved["lr"]) == ("dataset", 4, 2, 5e-3)

    assert saved["reward_funcs"] == f"{files['rewards']}:correct,short"  # recorded absolute
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert exit_code(["train", "--resume", str(output / "final"), "--steps", "2"]) == 0
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2] and "rewards/short/mean" in rows[2]


def test_trls_batch_options_make_the_step():
    from wgrpo.tools.train_options import apply_trl_arguments

    args = build_parser().parse_args(["train", "--per-device-train-batch-size", "4", "--gradient-accumulation-steps",
                                      "2", "--num-generations", "4"])
    apply_trl_arguments(args)
    assert (args.prompts_per_step, args.group_size) == (2, 4)  # 4 x 2 completions per optimizer step, 4 per prompt


def test_trl_aliases_set_wgrpo_options():
    args = build_parser().parse_args(["train", "--learning-rate", "3e-4", "--num-generations", "4",
                                      "--max-completion-length", "64", "--epsilon", "0.1", "--epsilon-high", "0.3",
                                      "--num-iterations", "2", "--max-grad-norm", "0.5", "--max-steps", "7",
                                      "--mask-truncated-completions", "--save-steps", "3", "--warmup-steps", "2"])
    assert (args.lr, args.group_size, args.max_new_tokens, args.eps_low, args.eps_high, args.mu) == \
        (3e-4, 4, 64, 0.1, 0.3, 2)
    assert (args.grad_clip, args.steps, args.mask_truncated, args.save_every, args.warmup_lr_steps) == \
        (0.5, 7, True, 3, 2)


@pytest.mark.parametrize("extra, message", [
    (["--generation-batch-size", "6"], "--generation-batch-size 6: must be a multiple of --group-size 4"),
    (["--generation-batch-size", "8", "--prompts-per-step", "3"],
     "--generation-batch-size 8 means --prompts-per-step 2, but --prompts-per-step 3 is given too"),
    (["--reward-funcs", "accuracy"], "--reward-funcs accuracy: applies to --dataset"),
    (["--dataset", "d.jsonl"], "--dataset d.jsonl: needs --reward-funcs"),
])
def test_inconsistent_options_are_refused_before_any_work(extra, message, capsys, tmp_path):
    assert exit_code(["train", "--output-dir", str(tmp_path / "out"), "--num-generations", "4", *extra]) == 2
    assert message in capsys.readouterr().err
