"""`wgrpo devices`, the no-adapter path, the dataclass -> argparse helpers, and the error policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wgrpo.engine import InputError
from wgrpo.tools import cli, options

REPO = Path(__file__).resolve().parents[2]


@dataclass
class _Example:
    steps: int = field(default=3, metadata={"help": "how many steps to run"})
    lr: float = field(default=1e-3, metadata={"help": "the learning rate"})
    name: str = field(default="run", metadata={"help": "a name for the run"})
    out: str | None = field(default=None, metadata={"help": "where to write", "metavar": "PATH"})
    verbose: bool = field(default=False, metadata={"help": "say more"})
    mode: str = field(default="a", metadata={"help": "pick a mode", "choices": ("a", "b")})


def _parser(cls):
    import argparse

    parser = argparse.ArgumentParser(prog="x")
    options.add_config_arguments(parser, cls)
    return parser


def test_helper_lists_every_field_with_its_help():
    text = _parser(_Example).format_help()
    for flag, help_text in [("--steps", "how many steps"), ("--lr", "the learning rate"), ("--name", "a name"),
                            ("--out PATH", "where to write"), ("--verbose", "say more"), ("--mode", "pick a mode")]:
        assert flag in text and help_text in text, flag


def test_helper_defaults_and_parsing():
    parser = _parser(_Example)
    assert options.config_from_args(_Example, parser.parse_args([])) == _Example()
    cfg = options.config_from_args(_Example, parser.parse_args(
        ["--steps", "5", "--lr", "0.5", "--out", "o.json", "--verbose", "--mode", "b"]))
    assert cfg == _Example(steps=5, lr=0.5, out="o.json", verbose=True, mode="b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])


def test_helper_refuses_a_field_without_help():
    @dataclass
    class NoHelp:
        x: int = 1

    with pytest.raises(TypeError, match="NoHelp.x needs"):
        _parser(NoHelp)


@dataclass
class _Checked:
    x: int = field(default=1, metadata={"help": "a number"})

    def __post_init__(self):
        if self.x == 2:
            raise ValueError("a bug in a check")  # not the user's fault: keeps its traceback
        if self.x == 3:
            raise InputError("--x 3: must not be 3")


def test_only_input_errors_are_usage_errors(capsys):
    parser = _parser(_Checked)

    def parsed(*argv):
        args = parser.parse_args(argv)
        args.parser = parser  # as build_parser's subcommands have
        return args

    with pytest.raises(ValueError, match="a bug in a check"):
        options.config_from_args(_Checked, parsed("--x", "2"))
    with pytest.raises(SystemExit) as exit_info:
        options.config_from_args(_Checked, parsed("--x", "3"))
    assert exit_info.value.code == 2 and capsys.readouterr().err == "x: error: --x 3: must not be 3\n"


def test_bench_help_lists_every_config_field(capsys):
    from dataclasses import fields

    from wgrpo.tools.bench import BenchConfig

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(BenchConfig):
        assert "--" + f.name.replace("_", "-") in text
        assert " ".join(f.metadata["help"].split())[:40] in text


def test_devices_names_the_chosen_adapter(device, capsys):
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert f"chosen: [{device.summary.index}] {device.name}" in out
    assert "<- chosen" in out and "max-storage-buffer-binding-size" in out


def test_devices_json(device, capsys):
    assert cli.main(["devices", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    chosen = [a for a in data["adapters"] if a["chosen"]]
    assert len(chosen) == 1 and chosen[0]["index"] == data["chosen"] == device.summary.index
    assert set(chosen[0]["features"]) == {"shader-f16", "subgroups", "timestamp-query", "shader-int64"}
    assert chosen[0]["limits"]["max-storage-buffer-binding-size"] > 0


def test_devices_in_a_subprocess(device):
    env = {k: v for k, v in os.environ.items() if k != "WGRPO_DEVICE"}
    result = subprocess.run([sys.executable, "-m", "wgrpo.tools.cli", "devices"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "chosen: [" in result.stdout


def test_unknown_device_spec_lists_adapters_and_fails(device, capsys):
    assert cli.main(["--device", "no-such-adapter-xyz", "devices"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("wgrpo devices: error: ") and "no adapter matches" in captured.err
    assert "Traceback" not in captured.err
    assert device.name in captured.out  # the adapters are still listed


@pytest.mark.parametrize("argv", [["devices"], ["devices", "--json"], ["bench", "--quick"]])
def test_no_adapter_exits_1_with_the_install_hint(monkeypatch, capsys, argv):
    import wgrpo.engine.device as engine_device

    monkeypatch.setattr(engine_device, "list_adapters", lambda: [])
    monkeypatch.setattr(engine_device, "_devices", {})  # no cached device from other tests
    monkeypatch.delenv("WGRPO_DEVICE", raising=False)
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "no GPU adapter found" in captured.err and "mesa-vulkan-drivers" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


# ---------------------------------------------------------------------------------------------- the error policy


def test_input_errors_are_one_line_and_exit_2(capsys):
    def bad_input():
        raise InputError("--steps 0: must be at least 1")

    assert cli.run_command(bad_input) == 2
    assert capsys.readouterr().err == "wgrpo: error: --steps 0: must be at least 1\n"
    assert cli.run_command(bad_input, prog="wgrpo train") == 2  # as argparse's usage errors start
    assert capsys.readouterr().err == "wgrpo train: error: --steps 0: must be at least 1\n"


@pytest.mark.parametrize("error", [TypeError("a bug"), ValueError("not converted yet"), KeyError("x"),
                                   FileNotFoundError("f")])
def test_every_other_exception_keeps_its_traceback(error):
    def buggy():
        raise error

    with pytest.raises(type(error)):
        cli.run_command(buggy)


@pytest.mark.parametrize("code", [0, 130, 143])
def test_system_exit_passes_untouched(code):
    def stopped_by_a_signal():
        raise SystemExit(code)

    with pytest.raises(SystemExit) as exit_info:
        cli.run_command(stopped_by_a_signal)
    assert exit_info.value.code == code


def test_ctrl_c_exits_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert cli.run_command(interrupted) == 130
    assert capsys.readouterr().err == "wgrpo: interrupted\n"


def run_into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    """`python -m wgrpo.tools.cli ARGS` whose stdout is a pipe nobody reads: its reader closed before it starts,
    so every write fails (what `wgrpo ... | head -1` does to the rest of the output)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "wgrpo.tools.cli", *args], cwd=REPO, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)


def test_a_closed_stdout_ends_quietly_with_141(device):
    result = run_into_a_closed_pipe("devices")
    assert (result.returncode, result.stderr) == (141, "")
