"""`wgrpo eval` on a tiny checkpoint: its options, the task it evaluates, and the checks before any work."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from wgrpo.rl.train.config import TrainConfig
from wgrpo.tools.cli import main
from wgrpo.tools.eval_cli import EvalConfig
from tests.tiny_checkpoint import save_tiny_checkpoint

TASK_OPTIONS = "digits=1,ops=+,template=plain,instructions=false"  # prompts short enough for the tiny model


def exit_code(argv) -> int:
    """main's exit code, whether it returns it or argparse raises SystemExit for a usage error."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, device):
    """A random tiny model with 64 positions and no trainer_config.json (a plain model directory)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("eval") / "m", device, seed=0)


def test_help_lists_every_eval_option(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(EvalConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name


def test_eval_of_a_tiny_checkpoint(checkpoint, capsys):
    code = main(["eval", "--model", str(checkpoint), "--task-options", TASK_OPTIONS, "--problems", "5",
                 "--max-new-tokens", "6", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["problems"] == 5 and 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["mean_length"])
    assert result["rewards"] == {"format": result["format"], "accuracy": result["accuracy"]}
    assert result["reward"] == pytest.approx(result["accuracy"] + 0.1 * result["format"])
    assert 0.0 <= result["pass@1"] <= result["accuracy"]
    assert main(["eval", "--model", str(checkpoint), "--task-options", TASK_OPTIONS, "--problems", "5",
                 "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.startswith("arithmetic: pass@1 (greedy) ")


@pytest.mark.parametrize("args,message", [
    (["--problems", "0"], "--problems 0: must be at least 1"),
    (["--problems", "-1"], "--problems -1: must be at least 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1"),
    (["--max-new-tokens", "64"], "--max-new-tokens 64: leaves no room for a prompt in the model's "
                                 "max_position_embeddings=64"),
    # the r1 template's prompts (arithmetic's own default) are far longer than 64 - 48 positions
    ([], "arithmetic train problem 0: prompt is 402 characters (~328 tokens), over the limit of 16 tokens (the "
         "model's max_position_embeddings=64 minus --max-new-tokens 48)"),
])
def test_bad_input_is_one_line_before_the_evaluation(checkpoint, capsys, args, message):
    assert exit_code(["eval", "--model", str(checkpoint), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wgrpo eval: error: {message}") and err.count("\n") == 1


def test_prompts_of_a_data_file_too_long_for_the_model_are_named_by_line(checkpoint, tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"question": "What is " + "one plus " * 40 + "one?", "answer": "#### 41"}) + "\n")
    argv = ["eval", "--model", str(checkpoint), "--task", "gsm8k", "--task-options",
            f"path={data},eval_path={data},template=plain", "--max-new-tokens", "6"]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wgrpo eval: error: {data}:1: prompt is ") and err.count("\n") == 1


def test_model_is_required_and_must_exist(tmp_path, capsys):
    assert exit_code(["eval"]) == 2
    assert capsys.readouterr().err == "wgrpo eval: error: --model DIR is required: the checkpoint directory to " \
                                      "evaluate\n"
    assert exit_code(["eval", "--model", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"wgrpo eval: error: --model {tmp_path / 'none'}: no such directory " \
                                      f"(expected a checkpoint directory or a Hugging Face Hub id such as " \
                                      f"Qwen/Qwen2.5-0.5B-Instruct)\n"


def copy_with_config(checkpoint, folder, text: str):
    """`checkpoint`'s files in `folder`, with `text` as its trainer_config.json."""
    import shutil

    shutil.copytree(checkpoint, folder)
    (folder / "trainer_config.json").write_text(text)
    return folder


def test_the_checkpoints_config_is_read_only_when_an_option_is_missing(checkpoint, tmp_path, capsys):
    corrupt = copy_with_config(checkpoint, tmp_path / "m", '{"task": "arithmetic",')
    argv = ["eval", "--model", str(corrupt), "--problems", "2", "--max-new-tokens", "6"]
    assert main([*argv, "--task", "arithmetic", "--task-options", TASK_OPTIONS]) == 0
    capsys.readouterr()
    assert main([*argv, "--task", "arithmetic"]) == 2
    assert capsys.readouterr().err.startswith(f"wgrpo eval: error: {corrupt / 'trainer_config.json'}: not valid JSON")


def test_the_saved_task_options_apply_to_the_saved_task_only(checkpoint, tmp_path, capsys):
    saved = dataclasses.asdict(TrainConfig(task="arithmetic", task_options=TASK_OPTIONS))
    trained = copy_with_config(checkpoint, tmp_path / "m", json.dumps(saved))
    argv = ["eval", "--model", str(trained), "--problems", "2", "--max-new-tokens", "6", "--json"]
    assert main(argv) == 0  # the checkpoint's task and options: short prompts
    assert json.loads(capsys.readouterr().out)["task"] == "arithmetic"
    # another task gets its own defaults, not arithmetic's options (no "has no option 'digits'"): its prompts
    # are then what is too long for this model
    assert main([*argv, "--task", "countdown"]) == 2
    assert capsys.readouterr().err.startswith("wgrpo eval: error: countdown train problem 0: prompt is ")
