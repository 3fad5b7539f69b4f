"""`wgrpo train`'s TRL spellings: the options a TRL user knows, beside wgrpo's own names.

Owns: `TRAIN_ALIASES` (TrainConfig field -> its TRL option names, from `GRPOConfig`'s 1:1 renames:
`--learning-rate` is `--lr`, `--num-generations` is `--group-size`, ...), and the TRL options that are a
computation on wgrpo's (`add_trl_arguments`, `apply_trl_arguments`): `--generation-batch-size N` (TRL's
completions per generation batch: --prompts-per-step N / --group-size), `--warmup-ratio R` (--warmup-lr-steps
ceil(R x --steps)) and `--bf16` (--dtype bfloat16); and, as in TRL, `--per-device-train-batch-size N
--gradient-accumulation-steps K` without --prompts-per-step make a step N x K completions. The defaults stay
wgrpo's (`wgrpo train --help`); `GRPOConfig` has TRL's.
"""

from __future__ import annotations

import argparse
import math

from wgrpo.tools.options import GIVEN, given_options


def train_aliases() -> dict[str, list[str]]:
    """TrainConfig field -> the TRL names that also set it on the command line."""
    from wgrpo.rl.train.grpo_config import CLI_ALIASES

    aliases: dict[str, list[str]] = {}
    for trl_name, field_name in CLI_ALIASES.items():
        aliases.setdefault(field_name, []).append(trl_name)
    return aliases


def add_trl_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TRL options computed from wgrpo's")
    group.add_argument("--generation-batch-size", dest="trl_generation_batch_size", type=int, metavar="N",
                       default=None, help="TRL's completions per generation batch: the same as --prompts-per-step "
                                          "N / --group-size (a multiple of it)")
    group.add_argument("--warmup-ratio", dest="trl_warmup_ratio", type=float, metavar="R", default=None,
                       help="TRL's warm-up as a share of the steps: --warmup-lr-steps ceil(R x --steps)")
    group.add_argument("--bf16", dest="trl_bf16", action="store_true", default=False,
                       help="TRL's bfloat16 switch: the same as --dtype bfloat16")


def _set(args: argparse.Namespace, name: str, value, source: str) -> None:
    """Set option `name` from the TRL option `source`, refusing a different value given for it as well."""
    if name in given_options(args) and getattr(args, name) != value:
        raise argparse.ArgumentTypeError(f"{source} means --{name.replace('_', '-')} {value}, but "
                                         f"--{name.replace('_', '-')} {getattr(args, name)} is given too")
    setattr(args, name, value)
    given = getattr(args, GIVEN, None)
    if given is None:
        given = set()
        setattr(args, GIVEN, given)
    given.add(name)


def apply_trl_arguments(args: argparse.Namespace) -> None:
    """Turn the TRL options given into wgrpo's (see the module docstring); a usage error (exit 2) naming both
    options when they disagree, or a batch that is no whole number of groups."""
    parser = args.parser
    try:
        if args.trl_generation_batch_size is not None:
            completions, group = args.trl_generation_batch_size, args.group_size
            if completions < group or completions % group:
                parser.error(f"--generation-batch-size {completions}: must be a multiple of --group-size {group} "
                             f"(whole groups; it is --prompts-per-step x --group-size)")
            _set(args, "prompts_per_step", completions // group, f"--generation-batch-size {completions}")
        given = given_options(args)
        if {"per_device_train_batch_size", "gradient_accumulation_steps"} <= given and \
                "prompts_per_step" not in given and args.per_device_train_batch_size:
            # TRL's batch: per-device x accumulation completions per optimizer step, num_generations per prompt
            completions, group = args.per_device_train_batch_size * args.gradient_accumulation_steps, args.group_size
            if completions % group:
                parser.error(f"--per-device-train-batch-size {args.per_device_train_batch_size} x "
                             f"--gradient-accumulation-steps {args.gradient_accumulation_steps} = {completions}: must "
                             f"be a multiple of --group-size {group} (whole groups)")
            _set(args, "prompts_per_step", completions // group, "--per-device-train-batch-size x "
                                                                 "--gradient-accumulation-steps")
        if args.trl_warmup_ratio is not None:
            ratio = args.trl_warmup_ratio
            if not 0 <= ratio <= 1:
                parser.error(f"--warmup-ratio {ratio}: must be in [0, 1]")
            _set(args, "warmup_lr_steps", math.ceil(ratio * args.steps), f"--warmup-ratio {ratio}")
        if args.trl_bf16:
            _set(args, "dtype", "bfloat16", "--bf16")
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
