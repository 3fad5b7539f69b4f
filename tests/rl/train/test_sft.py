"""Supervised fine-tuning: batching, masking, the schedule, learning on arithmetic, resume (exact, with the saved
options, refused when it cannot continue the run), and the transformers round trip."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.train.metrics_log import read_rows
from wgrpo.rl.train.sft import (Example, SFTConfig, learning_rate, make_batch, read_examples, resume_config,
                                train_sft)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def addition_data(path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        a, b = rng.integers(0, 50, size=2)
        records.append({"prompt": f"{a}+{b}=", "completion": f"{a + b}"})
    return write_jsonl(path, records)


def test_batch_masks_the_prompt_and_learns_the_end_of_text():
    inputs, targets, mask = make_batch([Example([5, 6, 7], [8, 0]), Example([9], [10, 11, 0])], pad_id=0)
    np.testing.assert_array_equal(inputs, [[5, 6, 7, 8], [9, 10, 11, 0]])
    np.testing.assert_array_equal(targets, [[6, 7, 8, 0], [10, 11, 0, 0]])
    # the targets under the mask are exactly the completion tokens, end-of-text included
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [1, 1, 1, 0]])


def test_schedule_warms_up_then_decays():
    config = SFTConfig(data="x", lr=1.0, warmup_steps=4, steps=20, min_lr_ratio=0.1)
    rates = [learning_rate(s, config) for s in range(20)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(rates[4:], rates[5:])) and rates[-1] >= 0.1


def test_bad_lines_are_named(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "c"}])
    with pytest.raises(ValueError, match=r"d\.jsonl:2: missing field 'completion'"):
        read_examples(path)


def tiny(tmp_path, data, **overrides):
    options = dict(data=str(data), output_dir=str(tmp_path / "run"), steps=40, batch_size=16, max_length=16,
                   lr=1e-2, warmup_steps=5, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2,
                   num_kv_heads=1, intermediate_size=64, seed=0)
    options.update(overrides)
    return SFTConfig(**options)


def test_sft_learns_addition(device, tmp_path):
    data = addition_data(tmp_path / "add.jsonl")
    summary = train_sft(tiny(tmp_path, data, steps=60), device)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 60 and all(np.isfinite(m["loss"]) for m in metrics)
    first = np.mean([m["loss"] for m in metrics[:3]])
    last = np.mean([m["loss"] for m in metrics[-5:]])
    assert last < 0.5 * first, (first, last)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert summary["last_loss"] == metrics[-1]["loss"]


def test_resume_continues_exactly(device, tmp_path):
    data = addition_data(tmp_path / "add.jsonl", n=64)
    constant = dict(warmup_steps=1, min_lr_ratio=1.0)  # the schedule then does not depend on `steps`
    straight = tiny(tmp_path / "a", data, steps=6, **constant)
    train_sft(straight, device)
    first_half = tiny(tmp_path / "b", data, steps=3, **constant)
    train_sft(first_half, device)
    resumed = tiny(tmp_path / "b", data, steps=6, resume=str(tmp_path / "b" / "run" / "final"), **constant)
    train_sft(resumed, device)
    a = [json.loads(x)["loss"] for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(b, a, rtol=1e-5)


def test_resume_in_the_directory_of_a_killed_run_logs_each_step_once(device, tmp_path):
    data = addition_data(tmp_path / "add.jsonl", n=64)
    options = dict(steps=6, save_every=3, warmup_steps=1, min_lr_ratio=1.0)
    train_sft(tiny(tmp_path, data, **options), device)
    run = tmp_path / "run"
    straight = [r["loss"] for r in read_rows(run / "metrics.jsonl")]
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 7, "lo')  # torn by a kill
    train_sft(tiny(tmp_path, data, resume=str(run / "checkpoint-3"), **options), device)
    rows = read_rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in rows], straight, rtol=1e-5)


def tiny_checkpoint(device, path, texts):
    from wgrpo.engine import END_OF_TEXT, Model, ModelConfig, train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=300)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_layers=1, num_heads=2,
                         num_kv_heads=1, intermediate_size=32, max_position_embeddings=32, eos_token_id=eos,
                         pad_token_id=eos)
    Model.random(config, device=device).save_pretrained(path, tokenizer)
    return path


def test_lines_over_max_length_are_refused_before_training(device, tmp_path):
    model = tiny_checkpoint(device, tmp_path / "m", ["12+7=19", "3+4=7"] * 20)
    lines = [{"prompt": "1+2=", "completion": "3"}, {"prompt": "7+" * 500_000 + "=", "completion": "?"},
             {"prompt": "1+1=", "completion": "2"}, {"prompt": "9+9=", "completion": "18" * 20}]
    data = write_jsonl(tmp_path / "d.jsonl", lines)
    with pytest.raises(InputError, match=r"d\.jsonl:2: \d+ tokens .* exceed max_length=16; 1 more lines are over"):
        train_sft(tiny(tmp_path, data, model=str(model)), device)
    assert not (tmp_path / "run").exists()  # refused before any work
    with pytest.raises(InputError, match=r"d\.jsonl:2: 45 tokens .* exceed what the model holds "
                       r"\(max_position_embeddings=32.*; 1 more"):
        train_sft(tiny(tmp_path, write_jsonl(tmp_path / "d.jsonl", [lines[0], lines[3]] * 2), model=str(model),
                       max_length=64), device)


def test_config_types_and_ranges_are_named():
    with pytest.raises(InputError, match=r"steps = '3': expected an integer"):
        SFTConfig(data="x", steps="3")
    with pytest.raises(InputError, match=r"--batch-size 0: must be at least 1"):
        SFTConfig(data="x", batch_size=0)


def test_round_trip_through_transformers(device, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from wgrpo.engine import load_pretrained

    data = addition_data(tmp_path / "add.jsonl", n=32)
    train_sft(tiny(tmp_path, data, steps=3), device)
    path = tmp_path / "run" / "final"
    model, tokenizer = load_pretrained(path, device)
    ids = np.array([tokenizer.encode("12+7=3").ids])
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        expected = hf(torch.from_numpy(ids)).logits.numpy()
    ours = model(ids).numpy()
    assert np.max(np.abs(ours - expected)) <= 1e-4 * np.max(np.abs(expected))
    assert transformers.AutoTokenizer.from_pretrained(path)("12+7=3")["input_ids"] == ids[0].tolist()


@pytest.fixture
def sft_run(device, tmp_path):
    """(data, options, final checkpoint) of a 2-step run saving every step, its data given by a relative path."""
    data = addition_data(tmp_path / "add.jsonl", n=32)
    options = dict(steps=2, save_every=1, warmup_steps=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        train_sft(tiny(tmp_path, "add.jsonl", **options), device)
    return data, options, tmp_path / "run" / "final"


def test_a_resume_at_or_below_the_checkpoints_step_is_refused_before_any_work(device, tmp_path, sft_run):
    data, options, checkpoint = sft_run
    (checkpoint / "model.safetensors").write_bytes(b"not read")
    for steps in (1, 2):
        with pytest.raises(InputError, match=rf"^--steps {steps}: {re.escape(str(checkpoint))} is at step 2 "
                                             rf"already; give --steps above 2$"):
            train_sft(tiny(tmp_path, data, **{**options, "steps": steps}, resume=str(checkpoint)), device)


def test_a_resume_keeps_the_saved_options_but_steps_output_and_saves(device, tmp_path, sft_run, capsys):
    data, options, checkpoint = sft_run
    saved = json.loads((checkpoint / "trainer_config.json").read_text())
    assert saved["data"] == str(data)  # stored absolute: the checkpoint means the same from anywhere
    with pytest.raises(InputError, match=rf"^--lr 0\.02: the run in {re.escape(str(checkpoint))} was trained with "
                                         rf"0\.01; --hidden-size 64: .* was trained with 32; a resumed run keeps"):
        train_sft(tiny(tmp_path / "refused", data, **{**options, "steps": 3}, lr=2e-2, hidden_size=64,
                       resume=str(checkpoint)), device)
    with pytest.raises(InputError, match=r"^--model .*elsewhere: the run in .* was trained with ''"):
        train_sft(tiny(tmp_path / "refused", data, **{**options, "steps": 3}, model=str(tmp_path / "elsewhere"),
                       resume=str(checkpoint)), device)
    assert not (tmp_path / "refused").exists()  # refused before any work
    moved = tiny(tmp_path / "other", data, **{**options, "steps": 3, "save_every": 0}, resume=str(checkpoint))
    summary = train_sft(moved, device)
    err = capsys.readouterr().err
    assert "changed: steps 2 -> 3 (the cosine learning-rate decay" in err and "changed: save_every 1 -> 0" in err
    assert f"changed: output_dir {tmp_path / 'run'} -> {tmp_path / 'other' / 'run'}" in err
    assert summary["checkpoint"] == str(tmp_path / "other" / "run" / "final")
    resumed = json.loads((tmp_path / "other" / "run" / "final" / "trainer_config.json").read_text())
    assert resumed == {**saved, "steps": 3, "save_every": 0, "output_dir": str(tmp_path / "other" / "run"),
                       "resume": str(checkpoint)}
    assert [r["step"] for r in read_rows(tmp_path / "other" / "run" / "metrics.jsonl")] == [3]


def test_a_saved_sft_config_that_does_not_fit_is_named(tmp_path):
    checkpoint = str(tmp_path / "checkpoint-3")
    given = SFTConfig(data="x", resume=checkpoint)
    saved = dataclasses.asdict(SFTConfig(data="x"))
    with pytest.raises(InputError, match=r"trainer_config\.json: unknown options \['group_size'\]"):
        resume_config(given, saved={**saved, "group_size": 8})
    with pytest.raises(InputError, match=r"trainer_config\.json: lr = .fast.: expected a number"):
        resume_config(given, saved={**saved, "lr": "fast"})
    with pytest.raises(InputError, match=r"trainer_config\.json: batch_size = 0: must be at least 1"):
        resume_config(given, saved={**saved, "batch_size": 0})
    config, changes = resume_config(dataclasses.replace(given, steps=500), saved=saved)
    assert config.steps == 500 and config.resume == checkpoint and changes[0].startswith("changed: steps 300 -> 500")


def test_an_optimizer_state_that_does_not_fit_is_named_by_its_file(device, tmp_path, sft_run):
    from safetensors.numpy import load_file, save_file

    from wgrpo.rl.train.checkpoint import OPTIMIZER_FILE

    data, options, checkpoint = sft_run
    optimizer_file = checkpoint / OPTIMIZER_FILE
    save_file({**load_file(str(optimizer_file)), "1.exp_avg_sq": np.zeros((2, 2), np.float32)}, str(optimizer_file))
    with pytest.raises(InputError, match=rf"^{re.escape(str(optimizer_file))}: AdamW\.load_state_dict: "
                                         rf"state\[1\]\['exp_avg_sq'\] has shape \(2, 2\)"):
        train_sft(tiny(tmp_path, data, **{**options, "steps": 3}, resume=str(checkpoint)), device)
