"""`wgrpo bench --grpo --trl --quick`: both sides run the same work and the JSON holds TRL's configuration, device,
times and the ratio; without trl, `--trl` stops before any work with one line naming the extra, as does a CUDA
`--torch-device` where torch has none; the one card TRL may see (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

from wgrpo.engine import InputError
from wgrpo.tools import cli
from wgrpo.tools.bench_trl import TRL_HINT, pin_one_card, trl_config_kwargs

TINY = ["--hidden-size", "32", "--num-layers", "2", "--num-heads", "4", "--num-kv-heads", "2",
        "--intermediate-size", "48"]
needs_trl = pytest.mark.skipif(importlib.util.find_spec("trl") is None,
                               reason="trl is not installed (the bench extra: pip install 'wgrpo[bench]')")


@needs_trl
def test_quick_run_against_trl(device, tmp_path, capsys):
    path = tmp_path / "grpo.json"
    code = cli.main(["bench", "--grpo", "--trl", "--quick", "--json", str(path), "--torch-threads", "1", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(path.read_text())
    setup, trl, comparison = report["setup"], report["trl"], report["comparison"]
    # the configuration TRL ran is wgrpo's
    config = trl["config"]
    assert (config["num_generations"], config["per_device_train_batch_size"], config["generation_batch_size"],
            config["gradient_accumulation_steps"], config["max_completion_length"]) == (4, 8, 8, 1, 8)
    assert config["beta"] == setup["beta"] == 0.04 and config["loss_type"] == setup["loss_type"] == "grpo"
    assert config["temperature"] == 1.0 and config["max_steps"] == 3 and config["shuffle_dataset"] is False
    assert config["bf16"] is False and config["use_cpu"] is True and trl["threads"] == 1
    assert config["fp16"] is False and config["tf32"] is False
    assert trl["device"] == "cpu" and trl["model_device"] == "cpu" and trl["n_gpu"] == 0  # auto, CPU adapter
    assert trl["reference_model"] is True and trl["reward_funcs"] == ["format", "accuracy"]
    assert config["reward_weights"] == [0.1, 1.0]
    # equal work: the same completions, new tokens and prompt tokens in every timed step, all at full length
    assert len(trl["steps"]) == len(report["steps"]) == 2
    assert comparison["equal_work"] is True
    work = {"completions": 8, "new_tokens": 2 * 4 * 8, "prompt_tokens": report["steps"][0]["prompt_tokens"]}
    assert comparison["work_per_step"] == {"wgrpo": work, "trl": work}
    assert all(s["full_length_fraction"] == 1.0 for s in trl["steps"])
    # times and ratios
    for phase in ("rollout", "reward", "update", "total"):
        row = comparison["phases"][phase]
        assert row["wgrpo_s"] > 0 and row["trl_s"] > 0, phase
        assert row["ratio"] == pytest.approx(row["trl_s"] / row["wgrpo_s"])
    assert comparison["ratio"] == comparison["phases"]["total"]["ratio"]
    spread = comparison["step_spread"]
    assert 0 < spread["trl"]["best_s"] <= comparison["phases"]["total"]["trl_s"] <= spread["trl"]["worst_s"]
    assert comparison["best_ratio"] == pytest.approx(spread["trl"]["best_s"] / spread["wgrpo"]["best_s"])
    s = trl["summary"]
    assert s["total_s"] >= s["generate_and_score_s"] >= s["rollout_s"] + s["reward_s"]
    assert 0 < comparison["rollout_share"]["trl"] < 1
    out = captured.out
    assert "TRL / wgrpo" in out and "equal work: both sides ran 8 completions" in out
    assert "float32 on cpu, 1 thread, attention" in out
    assert "TRL GRPO step 2/2" in captured.err  # the progress line


def test_missing_trl_is_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` raises ImportError
    code = cli.main(["bench", "--grpo", "--trl", "--quick", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wgrpo bench: error: --trl"), err
    assert TRL_HINT in lines[0] and TRL_HINT == "pip install 'wgrpo[bench]'"
    assert "setup:" not in err  # nothing was built


def test_trl_without_grpo_is_refused(capsys):
    assert cli.main(["bench", "--trl"]) == 2
    err = capsys.readouterr().err
    assert err == "wgrpo bench: error: --trl times TRL's GRPOTrainer beside wgrpo's GRPO steps: add --grpo\n"


@needs_trl
def test_cuda_without_cuda_is_one_line_before_any_work(device, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the pin rewrites it; monkeypatch restores it
    code = cli.main(["bench", "--grpo", "--trl", "--quick", *TINY, "--torch-device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "setup:" not in err, err
    assert lines[0].startswith("wgrpo bench: error: --torch-device cuda: torch ")
    assert lines[0].endswith("reports torch.cuda.is_available() False; use --torch-device cpu or auto")


@pytest.mark.parametrize("visible, spec, card, named", [
    (None, "cuda", "0", "cuda:0"),
    (None, "cuda:3", "3", "cuda:0"),
    ("4,6", "cuda:1", "6", "cuda:0"),
    ("4, 6", "cuda", "4", "cuda:0"),
    ("4,6", "auto", "4", "auto"),
])
def test_pin_one_card_leaves_the_chosen_card_visible(monkeypatch, visible, spec, card, named):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible or "")  # so monkeypatch restores what was there
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert pin_one_card(spec, adapter_is_cpu=False) == named
    assert os.environ["CUDA_VISIBLE_DEVICES"] == card


@pytest.mark.parametrize("spec, adapter_is_cpu", [("cpu", False), ("auto", True)])
def test_pin_one_card_leaves_the_cpu_alone(monkeypatch, spec, adapter_is_cpu):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert pin_one_card(spec, adapter_is_cpu) == spec
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"


def test_pin_one_card_refuses_a_card_not_visible(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    with pytest.raises(InputError, match=r"^--torch-device cuda:2: CUDA_VISIBLE_DEVICES=4,6 makes 2 card\(s\) "
                                         r"visible, cuda:0 to cuda:1$"):
        pin_one_card("cuda:2", adapter_is_cpu=False)


def test_trl_runs_float32_on_the_card_off_the_cpu():
    from wgrpo.rl.train.config import TrainConfig

    shape = {"prompts": 2, "group_size": 4, "new_tokens": 8}
    on_card = trl_config_kwargs(TrainConfig(), shape, 3, "out", [0.1, 1.0], "cuda:0")
    on_cpu = trl_config_kwargs(TrainConfig(), shape, 3, "out", [0.1, 1.0])
    assert on_cpu["use_cpu"] is True and on_card["use_cpu"] is False
    for kwargs in (on_card, on_cpu):
        assert (kwargs["bf16"], kwargs["fp16"], kwargs["tf32"]) == (False, False, False)


@needs_trl
def test_quick_run_against_trl_on_one_cuda_card(device, tmp_path, monkeypatch, capsys):
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() != 1:
        pytest.skip("needs torch to see exactly one CUDA card")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))
    path = tmp_path / "grpo.json"
    code = cli.main(["bench", "--grpo", "--trl", "--quick", "--json", str(path), "--torch-device", "cuda", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    trl = json.loads(path.read_text())["trl"]
    assert trl["config"]["use_cpu"] is False and trl["config"]["bf16"] is False and trl["config"]["tf32"] is False
    assert trl["device"] == "cuda:0" and trl["model_device"] == "cuda:0" and trl["n_gpu"] == 1
    assert f"float32 on cuda:0 ({trl['device_name']}, TF32 off)" in captured.out
