"""The `wgrpo` command line: one small function per subcommand, and `main`.

Owns: the subcommands and their parsers (options generated from config dataclasses by `tools.options`), the
`--device` choice handed to `engine.device`, and the error policy (`run_command`): wgrpo's own errors are one
line that starts as argparse's usage errors do, `wgrpo SUBCOMMAND: error: ...`; bad input exits 2, as those
do, no adapter or a kernel failure 1; every other exception is a bug and keeps its traceback. Subcommands
import their modules lazily, so `wgrpo --help` starts fast and creates no device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Callable, Sequence

from wgrpo.tools.options import (add_config_arguments, apply_config_file, config_file_argument, config_from_args,
                                 given_options, named_by_source)

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
            "shader-int64": summary.features.get("shader-int64", False),
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
        print(f"{args.parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Check, then time, every kernel against numpy and the adapter's own measured peak (or, with --model, a
    whole model step against PyTorch)."""
    from wgrpo.tools.bench import BenchConfig, run_bench

    config = config_from_args(BenchConfig, args)
    if getattr(args, "trl", False) and not config.grpo:
        from wgrpo.rl.errors import input_error

        raise input_error("--trl times TRL's GRPOTrainer beside wgrpo's GRPO steps: add --grpo")
    if config.profile and not (config.grpo or config.generate or config.model):
        from wgrpo.rl.errors import input_error

        raise input_error("--profile times the kernels of a model step, a generation or a GRPO step: add --model, "
                          "--generate or --grpo")
    if config.autotune:
        from wgrpo.tools.bench_autotune import run_autotune_bench
        from wgrpo.tools.bench_model import ModelBenchConfig

        return run_autotune_bench(config_from_args(ModelBenchConfig, args), config, device_spec=args.device)
    if config.checkpoints:
        from wgrpo.tools.bench_checkpoints import CheckpointBenchConfig, run_checkpoint_bench

        return run_checkpoint_bench(config_from_args(CheckpointBenchConfig, args), config, device_spec=args.device)
    if config.memory:
        from wgrpo.tools.bench_memory import MemoryBenchConfig, run_memory_bench

        return run_memory_bench(config_from_args(MemoryBenchConfig, args), config, device_spec=args.device)
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
    run's: those given may change only what `resume_config` allows, and each change is printed once every
    check has passed."""
    from wgrpo.rl.train.config import TrainConfig, resume_config
    from wgrpo.rl.train.checkpoint import recover_beside
    from wgrpo.rl.train.pipeline import run_train
    from wgrpo.tools.train_options import apply_trl_arguments

    apply_trl_arguments(args)
    if args.resume:
        recover_beside(args.resume, always=True)  # before its config is read: a killed save may have left it aside
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        with named_by_source(args):
            config, changes = resume_config(args.resume, {name: getattr(args, name) for name in given_options(args)
                                                          if name in names})
    else:
        config, changes = config_from_args(TrainConfig, args), []
    run_train(config, args.device, changes=changes)  # the device is made when the first model loads
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Greedy pass@1 of a checkpoint on a task's held-out problems."""
    from wgrpo.tools.eval_cli import EvalConfig, run_eval

    return run_eval(config_from_args(EvalConfig, args), device_spec=args.device)


def _aliases(command: str) -> dict[str, list[str]] | None:
    """Other names of a subcommand's options: TRL's, for `wgrpo train`."""
    if command != "train":
        return None
    from wgrpo.tools.train_options import train_aliases

    return train_aliases()


def _train_extra(parser: argparse.ArgumentParser) -> None:
    from wgrpo.tools.train_options import add_trl_arguments

    config_file_argument(parser)
    add_trl_arguments(parser)


def _train_config():
    from wgrpo.rl.train.config import TrainConfig

    return TrainConfig


def _eval_config():
    from wgrpo.tools.eval_cli import EvalConfig

    return EvalConfig


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
    from wgrpo.tools.merge_cli import add_merge_arguments, cmd_merge  # argparse only: no engine import

    def devices_extra(p):
        p.add_argument("--json", action="store_true", help="print the adapters as JSON instead of a list")

    def bench_extra(p):  # the options of `wgrpo bench --model`
        from wgrpo.tools.bench_model import ModelBenchConfig

        add_config_arguments(p, ModelBenchConfig)
        from wgrpo.tools.bench_generate import GenerateBenchConfig

        add_config_arguments(p, GenerateBenchConfig)
        from wgrpo.tools.bench_grpo import GRPOBenchConfig

        add_config_arguments(p, GRPOBenchConfig)
        from wgrpo.tools.bench_checkpoints import CheckpointBenchConfig

        add_config_arguments(p, CheckpointBenchConfig)
        from wgrpo.tools.bench_memory import MemoryBenchConfig

        add_config_arguments(p, MemoryBenchConfig)

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
                  _train_config, _train_extra),
        "eval": (cmd_eval, "greedy pass@1 of a checkpoint on a task's held-out problems", _eval_config, None),
        "generate": (cmd_generate, "sample completions of a prompt from a checkpoint, streaming the text",
                     _generate_config, generate_extra),
        "sft": (cmd_sft, "supervised fine-tuning on prompt/completion JSONL, from a checkpoint or a fresh model",
                _sft_config, None),
        "merge": (cmd_merge, "merge a PEFT LoRA adapter into its base model, written as a full Hugging Face "
                             "checkpoint", None, add_merge_arguments),
    }


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
            add_config_arguments(p, config_loader(), _aliases(name))
        if extra is not None:
            extra(p)
        p.set_defaults(func=func, parser=p)
    return parser


def run_command(command: Callable[[], int | None], prog: str = "wgrpo") -> int:
    """Run `command` under the command line's error policy; returns its exit code.

    wgrpo's own errors print one line, `PROG: error: ...` as argparse's usage errors do (`prog` is the
    subcommand's, `wgrpo train`): bad input (`InputError`) exits 2, as those do; no adapter (`NoAdapterError`)
    or a failed kernel (`KernelError`, `PROG: kernel error: ...`) or a Ray actor lost for good (`ClusterError`)
    exits 1. Ctrl-C exits 130. Every other
    exception is a bug and propagates with its traceback; `SystemExit` passes untouched (a trainer stopped by a
    signal saves, then exits 130 or 143 itself).
    """
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        code = _report(error, prog)
        if code is None:
            raise
        return code


def _report(error: Exception, prog: str) -> int | None:
    """Print one of wgrpo's own errors as one line and return its exit code; None for any other exception."""
    from wgrpo.engine import InputError, KernelError, NoAdapterError

    if isinstance(error, NoAdapterError):
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, KernelError):
        print(f"{prog}: kernel error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, InputError):
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    from wgrpo.rl.errors import ClusterError

    if isinstance(error, ClusterError):  # a Ray actor lost for good; the message says where to resume
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `wgrpo` console script; returns the exit code (see `run_command`). When the reader of
    stdout goes away (`wgrpo devices | head -1`) it stops quietly with 141, as a shell reports a process that
    SIGPIPE ended."""
    parser = build_parser()

    def parse_and_run(known: argparse.Namespace) -> int | None:
        apply_config_file(known.parser, getattr(known, "config", None))
        args = parser.parse_args(argv)
        if not hasattr(args, "device"):
            args.device = None  # engine.device then reads $WGRPO_DEVICE
        return args.func(args)

    try:
        try:
            # the subcommand first (argparse's usage errors and --help exit here): its name starts every error
            known, _ = parser.parse_known_args(argv)
            return run_command(lambda: parse_and_run(known), prog=known.parser.prog)
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
