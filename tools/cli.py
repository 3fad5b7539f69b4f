"""The `wgrpo` command line: one small function per subcommand, options generated from config dataclasses.

Owns: argument parsing (which options were given explicitly, `--config FILE.toml`), the `--device` choice handed
to `engine.device`, and the exit codes (`run_command`): bad input is one line and exit code 2, like argparse's
usage errors; no adapter or a kernel failure one line and 1; every other exception is a bug and keeps its
traceback. Subcommands import their modules lazily, so `wgrpo --help` starts fast and creates no device. A
subcommand's options come from its config dataclass through `add_config_arguments`: every field needs a default
and `field(metadata={"help": ...})`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from typing import Any, Callable, Sequence

# ---------------------------------------------------------------------------------------------- dataclass -> argparse

GIVEN = "options_given"  # namespace attribute: the config fields set on the command line
FROM_FILE = "options_from_file"  # namespace attribute: the config fields a --config file set


def _mark_given(namespace: argparse.Namespace, dest: str) -> None:
    given = getattr(namespace, GIVEN, None)
    if given is None:
        given = set()
        setattr(namespace, GIVEN, given)
    given.add(dest)


class _StoreGiven(argparse.Action):
    """argparse's plain store, remembering that the option was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _mark_given(namespace, self.dest)


class _BooleanGiven(argparse.BooleanOptionalAction):
    """`--x / --no-x`, remembering that the option was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _mark_given(namespace, self.dest)


def given_options(args: argparse.Namespace) -> set[str]:
    """The config fields given explicitly, on the command line or in the --config file, whatever their value
    (equal to the default or not)."""
    return set(getattr(args, GIVEN, ())) | set(getattr(args, FROM_FILE, ()))


def _option_type(hint) -> type:
    """The scalar type of a field's annotation: int, float, str, bool, or one of them `| None`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions are supported as options, got {hint}")
        return _option_type(args[0])
    if hint in (int, float, str, bool):
        return hint
    raise TypeError(f"unsupported option type {hint}: use int, float, str, bool or one of them | None")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one `--field-name` option per field of the dataclass `config_cls` to `parser`.

    Each field must have a default and `metadata={"help": ...}`; `metadata={"choices": [...]}` restricts the
    value and `metadata={"metavar": ...}` names it in `--help`. Booleans become `--x / --no-x`. Each option
    records on the namespace that it was given (`given_options`), and its action knows its `config_class`.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls must be a dataclass, got {config_cls!r}")
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} options")
    for f in dataclasses.fields(config_cls):
        help_text = f.metadata.get("help")
        if not help_text:
            raise TypeError(f"{config_cls.__name__}.{f.name} needs field(metadata={{'help': ...}})")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name} needs a default")
        kind = _option_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        if kind is bool:
            kwargs["action"] = _BooleanGiven
            kwargs["help"] = f"{help_text} (default: {'on' if default else 'off'})"
        else:
            kwargs["action"] = _StoreGiven
            kwargs["type"] = kind
            kwargs["help"] = help_text if default in (None, "") else f"{help_text} (default: {default})"
            if "choices" in f.metadata:
                kwargs["choices"] = list(f.metadata["choices"])
            if "metavar" in f.metadata:
                kwargs["metavar"] = f.metadata["metavar"]
            elif "choices" not in f.metadata:
                kwargs["metavar"] = kind.__name__.upper()
        action = group.add_argument(flag, **kwargs)
        action.config_class = config_cls  # lets a --config file's value be checked as this field's


def config_from_args(config_cls: type, args: argparse.Namespace):
    """The `config_cls` instance that the parsed options describe.

    Each value is checked against its field's type first, naming the option (`--grad-clip nan: expected a finite
    number`). A `ValueError` from those checks or the dataclass's own (`__post_init__`) is a usage error when
    `args` came from `build_parser`: one line on stderr and exit code 2, as argparse's own; else it propagates.
    """
    from wgrpo.rl.train.config import checked_field_value

    try:
        values = {f.name: checked_field_value(config_cls, f.name, getattr(args, f.name), as_option=True)
                  for f in dataclasses.fields(config_cls)}
        return config_cls(**values)
    except ValueError as error:
        parser = getattr(args, "parser", None)
        if parser is None:
            raise
        parser.exit(2, f"{parser.prog}: error: {error}\n")


# ---------------------------------------------------------------------------------------------- subcommands


def _adapter_record(summary, chosen: bool) -> dict:
    return {
        "index": summary.index,
        "name": summary.name,
        "backend": summary.backend,
        "type": summary.adapter_type,
        "driver": summary.driver,
        "chosen": chosen,
        "features": {
            "shader-f16": summary.features.get("shader-f16", False),
            "subgroups": summary.features.get("subgroup", False),
            "timestamp-query": summary.features.get("timestamp-query", False),
        },
        "limits": dict(summary.limits),
    }


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f" ({n / size:.4g} {unit})"
    return ""


def cmd_devices(args: argparse.Namespace) -> int:
    """List every adapter wgpu sees and mark the one wgrpo would use."""
    from wgrpo.engine import device as devices

    adapters = devices.list_adapters()
    if not adapters:
        raise devices.NoAdapterError(f"no GPU adapter found. {devices.INSTALL_HINT}")
    chosen, error = None, None
    try:
        chosen = devices.choose_adapter(args.device, adapters)
    except devices.NoAdapterError as e:  # a --device that matches nothing: still list what exists
        error = e
    records = [_adapter_record(a, chosen is not None and a.index == chosen.index) for a in adapters]
    if args.json:
        print(json.dumps({"adapters": records, "chosen": chosen.index if chosen else None}, indent=2))
    else:
        for r in records:
            mark = "  <- chosen" if r["chosen"] else ""
            print(f"[{r['index']}] {r['name']}{mark}")
            print(f"    backend {r['backend']}, type {r['type']}, driver {r['driver'] or '?'}")
            print("    features: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in r["features"].items()))
            print("    limits:")
            for name, value in r["limits"].items():
                size = _human_bytes(value) if "size" in name and "workgroup-size" not in name else ""
                print(f"      {name:40s} {value}{size}")
        if chosen is not None:
            print(f"chosen: [{chosen.index}] {chosen.name} ({chosen.backend}, {chosen.adapter_type})"
                  f"{'' if args.device is None else f' by --device {args.device!r}'}")
    if error is not None:
        print(f"wgrpo: error: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Check, then time, every kernel against numpy and the adapter's own measured peak (or, with --model, a
    whole model step against PyTorch)."""
    from wgrpo.tools.bench import BenchConfig, run_bench

    config = config_from_args(BenchConfig, args)
    if config.grpo:
        from wgrpo.tools.bench_grpo import GRPOBenchConfig, run_grpo_bench
        from wgrpo.tools.bench_model import ModelBenchConfig

        return run_grpo_bench(config_from_args(GRPOBenchConfig, args), config_from_args(ModelBenchConfig, args),
                              config, device_spec=args.device)
    if config.generate:
        from wgrpo.tools.bench_generate import GenerateBenchConfig, run_generate_bench
        from wgrpo.tools.bench_model import ModelBenchConfig

        return run_generate_bench(config_from_args(GenerateBenchConfig, args), config_from_args(ModelBenchConfig, args),
                                  config, device_spec=args.device)
    if config.model:
        from wgrpo.tools.bench_model import ModelBenchConfig, run_model_bench

        return run_model_bench(config_from_args(ModelBenchConfig, args), config, device_spec=args.device)
    return run_bench(config, device_spec=args.device)


def cmd_generate(args: argparse.Namespace) -> int:
    """Sample completions of --prompt from --model, streaming the text."""
    from wgrpo.tools.generate_cli import GenerateConfig, run_generate

    return run_generate(config_from_args(GenerateConfig, args), device_spec=args.device)


def cmd_sft(args: argparse.Namespace) -> int:
    """Supervised fine-tuning on prompt/completion JSONL (loss on the completion tokens)."""
    from wgrpo.engine.device import get_device
    from wgrpo.rl.train.sft import SFTConfig, train_sft

    config = config_from_args(SFTConfig, args)
    if not config.data:
        args.parser.error("--data is required: a JSONL file of {\"prompt\": ..., \"completion\": ...} lines")
    summary = train_sft(config, get_device(args.device))
    print(f"sft: loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f} over {summary['steps']} steps, "
          f"{summary['tokens_per_s']:.0f} completion tokens/s; model in {summary['checkpoint']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """GRPO: from --model, or (by default) a fresh tiny model warmed up on arithmetic traces; ends with a table
    of held-out accuracy and format before and after. With --resume, the checkpoint's saved options are the
    run's: those given may change only what `resume_config` allows, and each change is printed."""
    from wgrpo.rl.train.config import TrainConfig, resume_config
    from wgrpo.rl.train.pipeline import run_train

    if args.resume:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        config, changes = resume_config(args.resume, {name: getattr(args, name) for name in given_options(args)
                                                      if name in names})
        for line in changes:
            print(line, file=sys.stderr)
    else:
        config = config_from_args(TrainConfig, args)
    run_train(config, args.device)  # the device is made when the first model loads, after every check
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Greedy pass@1 of a checkpoint on a task's held-out problems."""
    from wgrpo.engine import InputError, load_pretrained
    from wgrpo.engine.device import get_device
    from wgrpo.rl.train.config import build_task
    from wgrpo.rl.train.evaluate import evaluate

    if not args.model:
        args.parser.error("--model DIR is required")
    if not os.path.isdir(args.model):
        raise InputError(f"--model {args.model}: no such checkpoint directory")
    task = build_task(*_eval_task(args))  # before the model loads: a bad option costs nothing
    model, tokenizer = load_pretrained(args.model, get_device(args.device))
    if tokenizer is None:
        raise InputError(f"--model {args.model}: no tokenizer.json next to the model")
    result = evaluate(model, tokenizer, task, problems=args.problems, max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps({"task": task.name, "problems": result.problems, "accuracy": result.accuracy,
                          "format": result.format, "mean_length": result.mean_length}, indent=2))
    else:
        print(f"{task.name}: pass@1 (greedy) {result.accuracy:.1%}, format {result.format:.1%} on "
              f"{result.problems} held-out problems ({result.seconds:.1f} s)")
        for prompt, completion in result.examples:
            print(f"  ...{prompt!r} -> {completion!r}")
    return 0


def _eval_task(args: argparse.Namespace) -> tuple[str, str, str]:
    """(task, task options, sandbox): those given, else those the checkpoint was trained with (its
    trainer_config.json, checked: a corrupt one is named), else `wgrpo train`'s defaults."""
    from wgrpo.rl.train.checkpoint import CONFIG_FILE
    from wgrpo.rl.train.config import TrainConfig, checked_field_value, read_saved_config

    saved = read_saved_config(args.model, required=False)
    where = os.path.join(args.model, CONFIG_FILE)

    def option(name: str, given):
        if given is not None:
            return given
        if name in saved:
            return checked_field_value(TrainConfig, name, saved[name], where)
        return getattr(TrainConfig, name)

    return option("task", args.task), option("task_options", args.task_options), option("sandbox", args.sandbox)


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    from wgrpo.rl.train.config import SANDBOXES

    p.add_argument("--model", default="", help="checkpoint directory to evaluate")
    p.add_argument("--task", default=None,
                   help="countdown, arithmetic, gsm8k or code (default: the task the checkpoint was trained on, "
                        "else arithmetic)")
    p.add_argument("--task-options", default=None,
                   help="key=value pairs, e.g. 'path=test.jsonl' (default: the checkpoint's training options, "
                        "else `wgrpo train`'s)")
    p.add_argument("--sandbox", default=None, choices=SANDBOXES,
                   help="how the code task runs tests (default: the checkpoint's training option, else auto; "
                        "see `wgrpo train --help`)")
    p.add_argument("--problems", type=int, default=200, help="held-out problems (default: 200)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="completion length limit (default: 48)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _train_config():
    from wgrpo.rl.train.config import TrainConfig

    return TrainConfig


def _sft_config():
    from wgrpo.rl.train.sft import SFTConfig

    return SFTConfig


def _generate_config():
    from wgrpo.tools.generate_cli import GenerateConfig

    return GenerateConfig


def _bench_config():
    from wgrpo.tools.bench import BenchConfig

    return BenchConfig


# name -> (function, one-line help, config dataclass loader or None, extra-argument adder or None)
def _subcommands() -> dict[str, tuple[Callable, str, Callable | None, Callable | None]]:
    def devices_extra(p):
        p.add_argument("--json", action="store_true", help="print the adapters as JSON instead of a list")

    def bench_extra(p):  # the options of `wgrpo bench --model`
        from wgrpo.tools.bench_model import ModelBenchConfig

        add_config_arguments(p, ModelBenchConfig)
        from wgrpo.tools.bench_generate import GenerateBenchConfig

        add_config_arguments(p, GenerateBenchConfig)
        from wgrpo.tools.bench_grpo import GRPOBenchConfig

        add_config_arguments(p, GRPOBenchConfig)

    def generate_extra(p):
        p.add_argument("-n", dest="num_samples", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="completions to sample (same as --num-samples)")

    return {
        "devices": (cmd_devices, "list GPU adapters, their features and limits, and which one is chosen", None,
                    devices_extra),
        "bench": (cmd_bench, "check kernels against numpy, then time them (GFLOP/s, GB/s, ratio to peak and numpy); "
                             "--model: forward and forward+backward tokens/s of a model, against PyTorch; "
                             "--grpo: seconds per GRPO step (rollout, reward, update)",
                  _bench_config, bench_extra),
        "train": (cmd_train, "GRPO training; with no --model, the R1-Zero demo on a fresh tiny model",
                  _train_config, _config_file_argument),
        "eval": (cmd_eval, "greedy pass@1 of a checkpoint on a task's held-out problems", None, _eval_arguments),
        "generate": (cmd_generate, "sample completions of a prompt from a checkpoint, streaming the text",
                     _generate_config, generate_extra),
        "sft": (cmd_sft, "supervised fine-tuning on prompt/completion JSONL, from a checkpoint or a fresh model",
                _sft_config, None),
    }


def _config_file_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="read options from a TOML file (keys are the option names with underscores); options "
                        "given on the command line win")


def _apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
    """Make a `--config FILE.toml`'s values the defaults of its subcommand, so that flags still override them.

    Each value is checked as its config field checks it, naming the file (`run.toml: steps = 1.5: expected an
    integer`); a table is accepted for a `key=value,...` option. The keys count as given (`given_options`)."""
    from wgrpo.engine import InputError
    from wgrpo.rl.train.config import checked_field_value

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
        return
    known, _ = parser.parse_known_args(argv)
    path = getattr(known, "config", None)
    if not path:
        return
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as error:
        raise InputError(f"--config {path}: cannot read it ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"--config {path} is not valid TOML: {error}") from None
    sub = known.parser
    fields = {action.dest: action.config_class for action in sub._actions if hasattr(action, "config_class")}
    unknown = sorted(set(values) - set(fields) - {"device"})
    if unknown:
        raise InputError(f"--config {path} sets unknown options {unknown}; see `wgrpo {known.command} --help`")
    if not isinstance(values.get("device", ""), str):
        raise InputError(f"{path}: device = {values['device']!r}: expected a string")
    checked = {name: checked_field_value(fields[name], name, value, path) if name in fields else value
               for name, value in values.items()}
    sub.set_defaults(**checked, **{FROM_FILE: frozenset(checked)})


def build_parser() -> argparse.ArgumentParser:
    # --device is accepted both before and after the subcommand; SUPPRESS keeps the subparser from resetting it.
    device_parent = argparse.ArgumentParser(add_help=False)
    device_parent.add_argument(
        "--device", default=argparse.SUPPRESS, metavar="SPEC",
        help="adapter to use: a backend (vulkan, metal, dx12, gl), 'cpu', an index from `wgrpo devices`, or part "
             "of the adapter name (default: $WGRPO_DEVICE, else the most capable adapter)")
    parser = argparse.ArgumentParser(
        prog="wgrpo", parents=[device_parent],
        description="GRPO for language models with every kernel a WGSL compute shader run through wgpu.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (func, help_text, config_loader, extra) in _subcommands().items():
        p = sub.add_parser(name, parents=[device_parent], help=help_text, description=help_text)
        if config_loader is not None:
            add_config_arguments(p, config_loader())
        if extra is not None:
            extra(p)
        p.set_defaults(func=func, parser=p)
    return parser


def run_command(command: Callable[[], int | None]) -> int:
    """Run `command` under the command line's error policy; returns its exit code.

    wgrpo's own errors print one line: bad input (`InputError`) exits 2, like argparse's usage errors; no adapter
    (`NoAdapterError`) or a failed kernel (`KernelError`) exits 1. Ctrl-C exits 130. Every other exception is a
    bug and propagates with its traceback; `SystemExit` passes untouched (a trainer stopped by a signal saves,
    then exits 130 or 143 itself).
    """
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print("wgrpo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        code = _report(error)
        if code is None:
            raise
        return code


def _report(error: Exception) -> int | None:
    """Print one of wgrpo's own errors as one line and return its exit code; None for any other exception."""
    from wgrpo.engine import InputError, KernelError, NoAdapterError

    if isinstance(error, NoAdapterError):
        print(f"wgrpo: error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, KernelError):
        print(f"wgrpo: kernel error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, InputError):
        print(f"wgrpo: error: {error}", file=sys.stderr)
        return 2
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `wgrpo` console script; returns the exit code (see `run_command`). When the reader of
    stdout goes away (`wgrpo devices | head -1`) it stops quietly with 141, as a shell reports a process that
    SIGPIPE ended."""
    parser = build_parser()

    def parse_and_run() -> int | None:
        _apply_config_file(parser, argv)
        args = parser.parse_args(argv)
        if not hasattr(args, "device"):
            args.device = None  # engine.device then reads $WGRPO_DEVICE
        return args.func(args)

    try:
        try:
            return run_command(parse_and_run)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        _discard_stdout()
        return 141


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is left does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (an embedding application's, a test's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
