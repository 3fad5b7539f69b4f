"""`wgrpo train` and `wgrpo eval` at the command line: options, TOML files, errors, a tiny evaluation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from wgrpo.rl.train.config import TrainConfig
from wgrpo.tools.cli import _apply_config_file, build_parser, main


def test_help_lists_every_train_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name


def parse_with_file(argv):
    parser = build_parser()
    _apply_config_file(parser, argv)
    return parser.parse_args(argv)


def test_toml_file_sets_defaults_and_flags_win(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('steps = 7\nlr = 2e-4\ntask_options = "digits=1"\ndynamic_sampling = true\n')
    args = parse_with_file(["train", "--config", str(path), "--steps", "9"])
    assert (args.steps, args.lr, args.task_options, args.dynamic_sampling) == (9, 2e-4, "digits=1", True)


def test_toml_errors_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown options ['stepz']" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("steps = = 3\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_unknown_task_is_named(device, capsys):
    assert main(["train", "--task", "chess", "--model", "x"]) == 1
    assert "unknown task 'chess'" in capsys.readouterr().err


def test_eval_of_a_tiny_checkpoint(device, tmp_path, capsys):
    from wgrpo.engine import Model, ModelConfig
    from wgrpo.engine.tokenizer import END_OF_TEXT, train_tokenizer
    from wgrpo.rl.tasks import get_task

    task = get_task("arithmetic", digits=1, ops="+", template="plain", instructions=False)
    tokenizer = train_tokenizer([task.sample(i).prompt + " 1+2+0=3</think> <answer>3</answer>" for i in range(40)],
                                vocab_size=300)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=2,
                         num_kv_heads=1, intermediate_size=48, max_position_embeddings=64, eos_token_id=eos,
                         pad_token_id=eos)
    Model.random(config, device=device).save_pretrained(tmp_path / "m", tokenizer)
    code = main(["eval", "--model", str(tmp_path / "m"), "--task-options", "digits=1,ops=+,template=plain,"
                 "instructions=false", "--problems", "5", "--max-new-tokens", "6", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["problems"] == 5 and 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["mean_length"])
