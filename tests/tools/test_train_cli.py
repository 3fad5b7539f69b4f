"""`wgrpo train` at the command line: options, TOML files, errors before any work, resume, recovery."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from wgrpo.rl.train.config import DEMO_TASK_OPTIONS, TrainConfig
from wgrpo.rl.train.schedule import cosine_lr
from wgrpo.tools.cli import build_parser, main
from wgrpo.tools.options import apply_config_file

TASK_OPTIONS = "digits=1,ops=+,template=plain,instructions=false"
# a fresh model's warm-up at its smallest, should a check below regress and let the run reach it
TINY_WARMUP = ["--sft-steps", "1", "--sft-examples", "8", "--vocab-size", "300", "--hidden-size", "16",
               "--num-layers", "1", "--num-heads", "2", "--num-kv-heads", "1", "--intermediate-size", "16"]


def exit_code(argv) -> int:
    """main's exit code, whether it returns it or argparse raises SystemExit for a usage error."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_help_lists_every_train_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name


def parse_with_file(argv):
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    apply_config_file(known.parser, known.config)
    return parser.parse_args(argv)


def test_toml_file_sets_defaults_and_flags_win(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('steps = 7\nlr = 2e-4\ntask_options = "digits=1"\ndynamic_sampling = true\n')
    args = parse_with_file(["train", "--config", str(path), "--steps", "9"])
    assert (args.steps, args.lr, args.task_options, args.dynamic_sampling) == (9, 2e-4, "digits=1", True)


def test_toml_tables_are_option_strings(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('lr = 1\n[task_options]\ndigits = 1\nops = "+"\ninstructions = false\n')
    args = parse_with_file(["train", "--config", str(path)])
    assert args.task_options == "digits=1,ops=+,instructions=false"
    assert args.lr == 1.0 and type(args.lr) is float


def test_toml_errors_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown options ['stepz']" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("steps = = 3\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [
    ("steps = 1.5", "steps = 1.5: expected an integer"),
    ('dynamic_sampling = "no"', 'dynamic_sampling = "no": expected true or false'),
    ("group_size = true", "group_size = true: expected an integer"),
    ("grad_clip = nan", "grad_clip = nan: expected a finite number"),
    ('task_options = {digits = 1, ops = ["+"]}', 'task_options = {digits = 1, ops = ["+"]}: a table\'s values '
     'must be numbers, strings or booleans, got ops = ["+"]'),
    ('loss_type = "ppo"', 'loss_type = "ppo": expected one of "grpo", "bnpo", "dapo", "dr_grpo"'),
    # out of range: named by file and key too, not by the option the file did not use
    ("group_size = 1", "group_size = 1: must be at least 2: GRPO's advantages compare the completions of a group, "
                       "so a group of one carries no signal"),
    ("min_lr_ratio = 5", "min_lr_ratio = 5: must be in [0, 1]"),
    ('[reward_weights]\naccuracy = "high"', 'reward_weights = {accuracy = "high"}: the weight of \'accuracy\' is '
                                            "'high', not a number"),
])
def test_toml_values_are_checked_naming_the_file(tmp_path, capsys, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    assert exit_code(["train", "--config", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"wgrpo train: error: {path}: {message}\n"
    assert not (tmp_path / "out").exists()


def test_a_flag_over_a_toml_value_is_named_as_the_flag(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("group_size = 1\n")
    assert exit_code(["train", "--config", str(path), "--group-size", "0"]) == 2
    assert capsys.readouterr().err.startswith("wgrpo train: error: --group-size 0: must be at least 2")
    # the flag's valid value wins over the file's bad one: the run gets as far as the missing model
    assert main(["train", "--config", str(path), "--group-size", "4", "--model", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"wgrpo train: error: --model {tmp_path / 'none'}: no such directory (expected a " \
                                      f"checkpoint directory or a Hugging Face Hub id such as Qwen/Qwen2.5-0.5B-Instruct)\n"


def test_every_error_of_a_subcommand_starts_with_its_name(tmp_path, capsys):
    """argparse's usage errors, the options' checks and the errors found later read alike."""
    for argv in (["train", "--steps", "x"], ["train", "--steps", "0"], ["train", "--model", str(tmp_path / "none")]):
        assert exit_code(argv) == 2
        assert capsys.readouterr().err.splitlines()[-1].startswith("wgrpo train: error: "), argv


@pytest.mark.parametrize("args,message", [
    (["--group-size", "1"], "--group-size 1: must be at least 2"),
    (["--grad-clip", "nan"], "--grad-clip nan: expected a finite number"),
    (["--grad-clip", "-1"], "--grad-clip -1.0: must be >= 0"),
    (["--min-lr-ratio", "5"], "--min-lr-ratio 5.0: must be in [0, 1]"),
    (["--save-every", "-1"], "--save-every -1: must be at least 0"),
    (["--eval-every", "-1"], "--eval-every -1: must be at least 0"),
    (["--reward-weights", "accuracy=abc"], "--reward-weights accuracy=abc: the weight of 'accuracy' is 'abc', not "
                                           "a number"),
    (["--reward-weights", "accuracy=1,accuracy=2"], "--reward-weights accuracy=1,accuracy=2: 'accuracy' is given "
                                                    "twice"),
    (["--task-options", "digits=1,digits=2"], "--task-options digits=1,digits=2: 'digits' is given twice"),
])
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert exit_code(["train", "--output-dir", str(out), *TINY_WARMUP, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wgrpo train: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["--reward-weights", "accuracy=1,length=0.5"],
     "--reward-weights accuracy=1,length=0.5: ['length'] name no reward of task 'arithmetic'"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--task-options", "digits=1,colour=blue"], "colour"),
    (["--task", "gsm8k", "--task-options", "path=missing.jsonl"], "missing.jsonl"),
    (["--model", "no-such-checkpoint"], "no-such-checkpoint: no such directory"),
    (["--resume", "no-such-checkpoint"], "no-such-checkpoint: no such checkpoint directory"),
    # a task other than arithmetic builds with its own defaults, not the demo's arithmetic options
    (["--task", "countdown", "--model", "no-such-checkpoint"], "no-such-checkpoint: no such directory"),
])
def test_what_the_options_name_is_checked_before_the_warm_up(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--output-dir", "out", *TINY_WARMUP, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wgrpo train: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "warmup").exists()


def test_a_corrupt_checkpoint_config_is_named(tmp_path, capsys):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")  # a checkpoint directory, whose trainer config is read first
    (checkpoint / "trainer_config.json").write_text('{"task": "arithmetic",')
    assert main(["train", "--resume", str(checkpoint)]) == 2
    assert f"{checkpoint / 'trainer_config.json'}: not valid JSON" in capsys.readouterr().err
    assert main(["eval", "--model", str(checkpoint)]) == 2
    assert f"{checkpoint / 'trainer_config.json'}: not valid JSON" in capsys.readouterr().err
    (checkpoint / "trainer_config.json").write_text('{"task": "arithmetic", "task_options": 5}')
    assert main(["eval", "--model", str(checkpoint)]) == 2
    assert (f"{checkpoint / 'trainer_config.json'}: task_options = 5: expected a string"
            in capsys.readouterr().err)


def saved_checkpoint(path, **options):
    """A directory holding only what `resume_config` reads: the trainer_config.json of a run."""
    path.mkdir(parents=True)
    config = TrainConfig(output_dir=str(path.parent), **options).absolute_paths()
    (path / "trainer_config.json").write_text(json.dumps(dataclasses.asdict(config)))
    return path


def test_resume_refuses_a_changed_option_before_any_work(tmp_path, capsys):
    checkpoint = saved_checkpoint(tmp_path / "run" / "checkpoint-3", model=str(tmp_path / "start"), group_size=8)
    assert main(["train", "--resume", str(checkpoint), "--group-size", "4"]) == 2
    assert capsys.readouterr().err == (
        f"wgrpo train: error: --group-size 4: the run in {checkpoint} was trained with 8; a resumed run keeps its "
        f"configuration (start a new run from {checkpoint} with --model to change it)\n")
    toml = tmp_path / "run.toml"
    toml.write_text("warmup_lr_steps = 1\n")  # a --config file's options are given options too
    assert main(["train", "--resume", str(checkpoint), "--config", str(toml)]) == 2
    assert "--warmup-lr-steps 1: the run in" in capsys.readouterr().err
    toml.write_text("steps = 0\n")
    assert main(["train", "--resume", str(checkpoint), "--config", str(toml)]) == 2
    assert capsys.readouterr().err == f"wgrpo train: error: {toml}: steps = 0: must be at least 1\n"


def test_resume_refuses_a_saved_config_missing_an_option(tmp_path, capsys):
    checkpoint = saved_checkpoint(tmp_path / "run" / "final", model=str(tmp_path / "start"), lr=3e-3)
    saved = json.loads((checkpoint / "trainer_config.json").read_text())
    del saved["lr"]  # else the resumed run would train at today's default lr, silently
    (checkpoint / "trainer_config.json").write_text(json.dumps(saved))
    assert main(["train", "--resume", str(checkpoint), "--steps", "6"]) == 2
    assert capsys.readouterr().err.startswith(
        f"wgrpo train: error: {checkpoint / 'trainer_config.json'}: missing options ['lr']")


def test_changes_are_printed_only_once_every_check_passed(tmp_path, capsys):
    checkpoint = saved_checkpoint(tmp_path / "run" / "final", model=str(tmp_path / "start"), steps=2)
    (checkpoint / "trainer_state").mkdir()
    (checkpoint / "trainer_state" / "state.json").write_text(json.dumps({
        "step": 2, "task": "arithmetic", "start_model": str(tmp_path / "gone"),
        "optimizer": {"step": 2, "hyperparameters": {}, "state": []}}))
    assert main(["train", "--resume", str(checkpoint), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "start_model" in err and "does not exist" in err and "changed:" not in err


# ---------------------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def start_model(tmp_path_factory, device):
    """A tiny model warmed up on arithmetic traces, so that its completions sometimes score and groups carry
    signal (a random model's rewards are all 0: resume would be trivially exact)."""
    from wgrpo.rl.tasks import get_task
    from wgrpo.rl.train.sft import SFTConfig, train_sft
    from wgrpo.rl.train.traces import warmup_records

    folder = tmp_path_factory.mktemp("start")
    task = get_task("arithmetic", digits=1, ops="+", template="plain", instructions=False)
    data = folder / "traces.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in warmup_records(task, 256, 0.5, seed=0)))
    summary = train_sft(SFTConfig(data=str(data), output_dir=str(folder / "sft"), steps=60, batch_size=16,
                                  max_length=64, lr=1e-2, warmup_steps=5, vocab_size=300, hidden_size=32,
                                  num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, seed=0), device)
    return str(summary["checkpoint"])


def run_options(model, min_lr_ratio="1"):
    # min_lr_ratio 1 by default: a flat learning rate after the warm-up does not depend on the run's length, so
    # a run of 3 steps resumed to 6 must equal a straight run of 6 exactly (with a decay, steps 1-3 of the
    # 3-step run decay faster than those of the 6-step run); the decay's new horizon is checked on its own
    return ["--model", model, "--task-options", TASK_OPTIONS, "--prompts-per-step", "2", "--group-size", "4",
            "--max-new-tokens", "24", "--lr", "3e-3", "--warmup-lr-steps", "2",
            "--min-lr-ratio", min_lr_ratio, "--eval-every", "0", "--eval-problems", "4"]


def rows(path):
    return {r["step"]: r for r in map(json.loads, (path / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_resume_with_only_more_steps_equals_the_straight_run(start_model, tmp_path, capsys):
    first, straight = tmp_path / "first", tmp_path / "straight"
    assert main(["train", *run_options(start_model), "--steps", "3", "--output-dir", str(first)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(first / "final"), "--steps", "6"]) == 0
    assert ("changed: steps 3 -> 6 (the cosine learning-rate decay of the remaining steps now ends at step 6 "
            "instead of 3)") in capsys.readouterr().err
    assert main(["train", *run_options(start_model), "--steps", "6", "--output-dir", str(straight)]) == 0
    resumed, whole = rows(first), rows(straight)
    assert sorted(resumed) == sorted(whole) == [1, 2, 3, 4, 5, 6]
    assert any(whole[s]["reward_std"] > 0 for s in whole), "no group carried signal: the test would prove nothing"
    for step in whole:
        for key in ("learning_rate", "reward", "reward_std", "loss", "kl"):
            np.testing.assert_allclose(resumed[step][key], whole[step][key], rtol=1e-5, atol=1e-7,
                                       err_msg=f"step {step} {key}")
    saved = json.loads((first / "final" / "trainer_config.json").read_text())
    assert saved["steps"] == 6 and saved["group_size"] == 4 and saved["resume"] == str(first / "final")
    a, b, start = weights(first / "final"), weights(straight / "final"), weights(Path(start_model))
    assert any(not np.array_equal(start[name], b[name]) for name in b), "training changed nothing"
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_resume_with_more_steps_decays_the_rest_to_the_new_horizon(start_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", *run_options(start_model, min_lr_ratio="0.5"), "--steps", "3", "--output-dir",
                 str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "final"), "--steps", "6"]) == 0
    assert "changed: steps 3 -> 6 (the cosine learning-rate decay of the remaining steps now ends at step 6" in (
        capsys.readouterr().err)
    logged = rows(out)
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    # a row's step counts the updates done; its lr is the one of update step - 1
    expected = {step: cosine_lr(step - 1, 3 if step <= 3 else 6, 3e-3, 2, 0.5) for step in logged}
    assert expected[4] != cosine_lr(3, 3, 3e-3, 2, 0.5)  # the horizon changes what the remaining steps get
    for step, row in logged.items():
        assert row["learning_rate"] == pytest.approx(expected[step], rel=1e-12), step


def test_resume_from_another_directory(start_model, tmp_path, monkeypatch, capsys):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(here)
    relative_model = os.path.relpath(start_model, here)
    assert main(["train", *run_options(relative_model), "--steps", "2", "--output-dir", "out",
                 "--save-every", "1"]) == 0
    saved = json.loads((here / "out" / "final" / "trainer_config.json").read_text())
    assert saved["model"] == start_model and saved["output_dir"] == str(here / "out")
    state = json.loads((here / "out" / "final" / "trainer_state" / "state.json").read_text())
    assert state["start_model"] == start_model
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["train", "--resume", "../here/out/final", "--steps", "3", "--group-size", "4"]) == 0
    assert sorted(rows(here / "out")) == [1, 2, 3] and not (elsewhere / "out").exists()
    assert main(["train", "--resume", "../here/out/final", "--steps", "4", "--max-new-tokens", "8"]) == 2
    assert "--max-new-tokens 8: the run in" in capsys.readouterr().err
    assert main(["train", "--resume", "../here/out/final", "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wgrpo train: error: --steps 3: ") and "is at step 3 already" in err


def set_aside(checkpoint: Path) -> Path:
    """Rename `checkpoint` as a replacement killed between its two renames leaves it (engine.atomic_dir:
    `.NAME.old-` + 16 hex digits of time_ns + 6 of a uuid), with nothing under its own name."""
    aside = checkpoint.parent / f".{checkpoint.name}.old-{0x10000:016x}0000aa"
    checkpoint.rename(aside)
    return aside


def test_a_checkpoint_a_killed_save_left_aside_is_recovered_before_it_is_read(start_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", *run_options(start_model), "--steps", "2", "--output-dir", str(out)]) == 0
    final = out / "final"
    capsys.readouterr()
    aside = set_aside(final)
    assert main(["train", "--resume", str(final), "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert f"restored {final} from {aside.name}" in err and sorted(rows(out)) == [1, 2, 3]
    set_aside(final)
    assert main(["eval", "--model", str(final), "--problems", "2", "--max-new-tokens", "6", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"restored {final} from {aside.name}" in captured.err and json.loads(captured.out)["problems"] == 2
    set_aside(final)
    assert main(["train", *run_options(str(final)), "--steps", "1", "--output-dir", str(tmp_path / "next")]) == 0
    assert f"restored {final} from {aside.name}" in capsys.readouterr().err


def test_the_demo_records_the_task_options_it_trained_on(tmp_path, device, capsys):
    out = tmp_path / "out"
    assert main(["train", *TINY_WARMUP, "--output-dir", str(out), "--steps", "1", "--prompts-per-step", "1",
                 "--group-size", "2", "--max-new-tokens", "4", "--eval-problems", "1"]) == 0
    saved = json.loads((out / "final" / "trainer_config.json").read_text())
    assert saved["task"] == "arithmetic" and saved["task_options"] == DEMO_TASK_OPTIONS


def test_the_memory_estimate_is_printed_checked_and_the_peak_logged(tmp_path, device, capsys):
    out = tmp_path / "out"
    options = [*TINY_WARMUP, "--output-dir", str(out), "--steps", "1", "--prompts-per-step", "1", "--group-size", "2",
               "--max-new-tokens", "4", "--eval-problems", "1"]
    assert main(["train", *options]) == 0
    err = capsys.readouterr().err
    assert "wgrpo: estimated device memory for a GRPO step: " in err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["memory/estimate/total"] > 0 and rows[0]["memory/estimate/weights"] > 0
    assert rows[1]["memory/peak/total"] >= rows[1]["memory/peak/weights"] > 0
    # the estimate is checked against what the device can hold before the first step
    assert main(["train", *options, "--model", str(out / "final"), "--output-dir", str(tmp_path / "again"),
                 "--task-options", DEMO_TASK_OPTIONS, "--device-memory", "64K"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("wgrpo train: error: estimated device memory for a GRPO step: ") and "64.0 KiB" in err
    assert not (tmp_path / "again" / "metrics.jsonl").exists()
