"""`wgrpo bench --model --quick` on a tiny model: well-formed JSON, one submit per step, torch's ratio when
torch is importable; `--torch-device`'s spelling, its resolution, and CUDA refused in one line where torch has
none."""

from __future__ import annotations

import json

import pytest

from wgrpo.engine.hf import expected_shapes
from wgrpo.tools import cli
from wgrpo.engine import InputError
from wgrpo.tools.bench_model import ModelBenchConfig
from wgrpo.tools.torch_twin import resolve_torch_device, torch_device_label

TINY = ["--vocab-size", "61", "--hidden-size", "32", "--num-layers", "2", "--num-heads", "4", "--num-kv-heads", "2",
        "--intermediate-size", "40", "--batch-size", "2", "--seq-len", "7"]


def _run(tmp_path, capsys, *args):
    path = tmp_path / "model.json"
    code = cli.main(["bench", "--model", "--quick", "--json", str(path), *args])
    captured = capsys.readouterr()
    return code, json.loads(path.read_text()), captured


def _check_phases(report, optimizer: bool):
    assert set(report["phases"]) == {"forward", "forward_backward"}
    for phase, entry in report["phases"].items():
        assert entry["submits_per_step"] == 1, phase  # the whole step, backward included, is one submit
        assert entry["readbacks_per_step"] == 1, phase  # the loss
        assert entry["time_ms"] > 0 and entry["tokens_per_s"] > 0 and entry["trials"] == 3
        assert entry["tokens_per_s"] == pytest.approx(2 * 7 / (entry["time_ms"] * 1e-3))
    d = report["dispatches_per_phase"]
    assert d["model"] > 0 and d["cross_entropy"] > 0 and d["backward"] > 0
    assert report["phases"]["forward"]["dispatches_per_step"] == d["model"] + d["cross_entropy"]
    expected = d["model"] + d["cross_entropy"] + d["backward"] + d.get("optimizer", 0)
    assert report["phases"]["forward_backward"]["dispatches_per_step"] == expected
    assert ("optimizer" in d) == optimizer
    if optimizer:  # one AdamW dispatch per parameter tensor
        assert d["optimizer"] == len(expected_shapes(ModelBenchConfig(**_tiny_kwargs()).model_config()))


def _tiny_kwargs():
    pairs = zip(TINY[::2], TINY[1::2])
    return {flag[2:].replace("-", "_"): int(value) for flag, value in pairs}


def test_tiny_model_without_torch(device, tmp_path, capsys):
    code, report, captured = _run(tmp_path, capsys, *TINY, "--no-torch", "--optimizer")
    assert code == 0, captured.err
    assert report["adapter"]["name"] == device.name
    assert report["model"]["hidden_size"] == 32 and report["model"]["num_kv_heads"] == 2
    assert report["batch"] == {"batch_size": 2, "seq_len": 7, "tokens_per_step": 14}
    assert report["config"]["optimizer"] is True and report["config"]["warmup"] == 1
    _check_phases(report, optimizer=True)
    assert report["torch"] is None and report["check"] is None
    assert any("--no-torch" in note for note in report["notes"])
    assert "forward+backward" in captured.out and "tokens/s" in captured.out  # the table
    assert "dispatches recorded per step: forward" in captured.out and "AdamW" in captured.out
    assert "forward+backward 3/3" in captured.err  # the progress line


def test_tiny_model_against_torch(device, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    code, report, captured = _run(tmp_path, capsys, *TINY, "--architecture", "llama", "--tie-word-embeddings")
    assert code == 0, captured.err
    _check_phases(report, optimizer=False)
    check = report["check"]
    assert check["ok"] is True and check["relative_difference"] <= 1e-4
    torch_report = report["torch"]
    assert torch_report["dtype"] == "float32" and torch_report["threads"] >= 1
    assert report["config"]["torch_device"] == "auto"
    assert torch_report["device"] == "cpu" and torch_report["tf32"] is None  # auto on a CPU adapter
    assert f"float32 on cpu, {torch_report['threads']} thread" in captured.out
    for phase, entry in report["phases"].items():
        theirs = torch_report["phases"][phase]
        assert theirs["tokens_per_s"] > 0
        assert entry["ratio_to_torch"] == pytest.approx(entry["tokens_per_s"] / theirs["tokens_per_s"])
    assert "x torch" in captured.out and "check: loss" in captured.out


def test_checkpoint_directory(device, tmp_path, capsys):
    from wgrpo.engine import Model

    config = ModelBenchConfig(**_tiny_kwargs(), architecture="llama").model_config()
    Model.random(config, seed=3, device=device).save_pretrained(tmp_path / "ckpt")
    code, report, captured = _run(tmp_path, capsys, "--model-path", str(tmp_path / "ckpt"), "--no-torch",
                                  "--batch-size", "1", "--seq-len", "5", "--trials", "2")
    assert code == 0, captured.err
    assert report["model"]["architecture"] == "llama" and report["model"]["vocab_size"] == 61
    assert report["phases"]["forward_backward"]["submits_per_step"] == 1
    assert report["phases"]["forward"]["trials"] == 2


@pytest.mark.parametrize("args, message", [
    (["--hidden-size", "30", "--num-heads", "4"], "must be divisible by num_heads"),
    (["--batch-size", "0"], "--batch-size must be positive"),
])
def test_bad_options_are_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--model", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_model_options(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model," in text
    for f in fields(ModelBenchConfig):
        assert "--" + f.name.replace("_", "-") in text


def _no_cuda():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here")
    return torch


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda0"])
def test_torch_device_spelling_is_a_usage_error(capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--model", "--torch-device", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"wgrpo bench: error: --torch-device must be auto, cpu, cuda or cuda:N (N a card index), " \
                  f"got {value!r}\n"


@pytest.mark.parametrize("bench", ["--model", "--generate"])
@pytest.mark.parametrize("value", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_line_before_any_model(device, capsys, bench, value):
    torch = _no_cuda()
    code = cli.main(["bench", bench, "--quick", *TINY, "--torch-device", value])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no progress line: nothing was built
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    assert lines[0] == f"wgrpo bench: error: --torch-device {value}: torch {torch.__version__} ({build}) reports " \
                       f"torch.cuda.is_available() False; use --torch-device cpu or auto"


def test_no_torch_ignores_the_torch_device(device, tmp_path, capsys):
    _no_cuda()
    code, report, captured = _run(tmp_path, capsys, *TINY, "--no-torch", "--torch-device", "cuda")
    assert code == 0, captured.err
    assert report["torch"] is None


def test_auto_and_cpu_resolve_to_the_cpu_here(device):
    _no_cuda()
    assert device.is_software  # lavapipe: auto keeps torch on the CPU beside a CPU adapter
    assert ModelBenchConfig().resolved_torch_device(device) == "cpu"
    assert resolve_torch_device("auto", adapter_is_cpu=False) == "cpu"  # a GPU adapter, but torch has no CUDA
    assert resolve_torch_device("cpu", adapter_is_cpu=False) == "cpu"
    with pytest.raises(InputError, match=r"^--torch-device cuda:0: torch .* reports torch.cuda.is_available\(\) "
                                         r"False; use --torch-device cpu or auto$"):
        resolve_torch_device("cuda:0", adapter_is_cpu=False)


def test_device_labels():
    assert torch_device_label({"device": "cpu", "threads": 1}) == "cpu, 1 thread"
    assert torch_device_label({"device": "cpu", "threads": 16}) == "cpu, 16 threads"
    assert torch_device_label({"device": "cuda:1", "device_name": "NVIDIA H200", "threads": 16}) == \
        "cuda:1 (NVIDIA H200, TF32 off)"


def test_tiny_model_against_torch_on_cuda(device, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device here")
    code, report, captured = _run(tmp_path, capsys, *TINY, "--architecture", "llama", "--torch-device", "cuda")
    assert code == 0, captured.err
    t = report["torch"]
    assert t["device"] == f"cuda:{torch.cuda.current_device()}" and t["tf32"] is False
    assert t["device_name"] == torch.cuda.get_device_name(t["device"])
    assert report["check"]["ok"] is True
    assert f"float32 on {t['device']} ({t['device_name']}, TF32 off)" in captured.out
