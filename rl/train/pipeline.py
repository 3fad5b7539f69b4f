"""`wgrpo train` end to end: start from a checkpoint, or warm up a fresh tiny model on reasoning traces that are
only sometimes right; then GRPO; then a table of base vs trained held-out accuracy and format rate.

Owns: checking the run's options before any long work (restoring first a checkpoint that a killed save left
aside: `recover_beside`), choosing the starting point and the reference model, the warm-up data, and the final
report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from wgrpo.engine import InputError
from wgrpo.rl.train.checkpoint import CONFIG_FILE, STATE_FILE, read_state, recover_beside
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.metrics_log import METRICS_FILE, read_rows
from wgrpo.rl.train.sft import SFTConfig, train_sft
from wgrpo.rl.train.task_options import task_of
from wgrpo.rl.train.trainer import GRPOLoop
from wgrpo.rl.train.traces import warmup_records


def warm_up(config: TrainConfig, task, device) -> Path:
    """Train a tokenizer and a fresh model on `sft_examples` traces; returns the checkpoint directory."""
    if task.name != "arithmetic":
        raise InputError(f"--task {task.name}: the warm-up of a fresh model writes arithmetic reasoning traces; "
                         f"give --model DIR (a checkpoint that can sometimes solve the task)")
    folder = Path(config.output_dir) / "warmup"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "traces.jsonl"
    with open(data, "w") as f:
        for record in warmup_records(task, config.sft_examples, config.sft_error_rate, config.seed):
            f.write(json.dumps(record) + "\n")
    sft = SFTConfig(data=str(data), output_dir=str(folder), steps=config.sft_steps, batch_size=32,
                    max_length=256, lr=config.sft_lr, warmup_steps=min(20, config.sft_steps),
                    seed=config.seed, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                    num_layers=config.num_layers, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                    intermediate_size=config.intermediate_size)
    done, resumable = _earlier_warm_up(folder, sft)
    if done is not None:
        print(f"warm-up: {done} has these settings already; starting from it", file=sys.stderr)
        return done
    print(f"warm-up: {config.sft_examples} reasoning traces ({config.sft_error_rate:.0%} with the bug: "
          f"carries forgotten), {config.sft_steps} supervised steps"
          f"{f', continuing from {resumable}' if resumable else ''}", file=sys.stderr)
    sft = dataclasses.replace(sft, resume=str(resumable or ""))
    summary = train_sft(sft, device, resume_hint="the same `wgrpo train` command: the warm-up continues from "
                                                 "its last checkpoint")
    return Path(summary["checkpoint"])


def _earlier_warm_up(folder: Path, sft: SFTConfig) -> tuple[Path | None, Path | None]:
    """(a finished warm-up with exactly these settings, else None; the latest interrupted one with them, else
    None) in `folder`, so that `wgrpo train` run again after a stop neither repeats nor restarts the warm-up."""
    wanted = {**dataclasses.asdict(sft), "resume": ""}

    def same_settings(checkpoint: Path) -> bool:
        try:
            saved = json.loads((checkpoint / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(saved, dict) and {**saved, "resume": ""} == wanted

    final = folder / "final"
    if same_settings(final):
        return final, None
    steps = sorted((int(p.name.rpartition("-")[2]), p) for p in folder.glob("checkpoint-*")
                   if p.name.rpartition("-")[2].isdigit())
    return None, next((p for _, p in reversed(steps) if same_settings(p)), None)


def policy_and_reference(model, config: TrainConfig):
    """(policy, reference) from the starting model.

    Full fine-tuning: the policy trains float32 master weights; the reference, a frozen copy for the KL penalty
    (none when beta is 0), keeps the dtype the model was loaded in, so a bf16 checkpoint's reference costs 2
    bytes per parameter and is the loaded model itself. A starting PEFT adapter is merged into its base first.
    LoRA (`use_peft`): the policy is the model itself, its base frozen in the loaded dtype, with new adapters
    (or the starting adapter, trained on); no reference model: the base with the adapters off is the
    reference."""
    from wgrpo.engine import Model, attach_lora, merge_and_unload

    if config.use_peft:
        if model.adapters is None:
            attach_lora(model, config.lora_config(), seed=config.seed)
        else:
            lora = model.adapters.config
            print(f"wgrpo: training the LoRA adapter of {config.model} (r={lora.r}, alpha={lora.lora_alpha:g}, "
                  f"dropout={lora.lora_dropout:g}); the --lora-* options do not apply to it", file=sys.stderr)
        return model, None
    model = merge_and_unload(model)  # full fine-tuning from an adapter: the merged model is the start
    policy = model.to("float32")
    if config.beta <= 0:
        return policy, None
    if policy is not model:
        return policy, model
    return policy, Model.from_numpy(model.config, model.state_dict(), model.device, source="reference")


def run_train(config: TrainConfig, device=None, *, changes: Sequence[str] = ()) -> dict:
    """Train as configured on `device` (a Device, or a `--device` spec made into one when the first model loads)
    and print the before/after table; returns the evaluations.

    Everything the options name is checked before any long work (the warm-up, loading a model): the task and
    its data, the reward weights, the checkpoint to start or resume from. Paths are made absolute first, and
    the demo's task options filled in (`TrainConfig.with_demo_task_options`), so that the checkpoints'
    trainer_config.json and start model say what the run did from any directory. With `config.resume` the
    config is used as given: `config.resume_config` builds the one that continues the saved run, and its
    `changed: ...` lines, passed as `changes`, are printed on stderr once every check has passed, just before
    training starts."""
    from wgrpo.engine import is_hub_id, load_pretrained

    config = config.absolute_paths().with_demo_task_options()
    if config.rollout_workers:
        check_ray_installed(config)
    task = task_of(config)
    config.weights(task)  # names a reward part the task does not give
    if config.rollout_workers:
        start = resume_start(config) if config.resume else config.model and model_directory(config.model)
        start = start or str(warm_up(config, task, device))
        from wgrpo.rl.cluster.driver import train_on_cluster

        for line in changes:
            print(line, file=sys.stderr)
        history, trainer = train_on_cluster(config, task, os.path.abspath(start), device)
        report(history, trainer)
        return {"history": history, "output_dir": config.output_dir}
    if config.resume:
        start = resume_start(config)  # the command line recovered the checkpoint before reading its config
        # the frozen starting policy, loaded once the checkpoint's own files are known to be whole
        reference = start if config.beta > 0 and not config.use_peft else None  # LoRA: the base is the reference
        trainer = GRPOLoop.resume_from(config, config.resume, device, reference, task=task)
    else:
        start = config.model and model_directory(config.model)
        start = start or str(warm_up(config, task, device))
        model, tokenizer = load_pretrained(start, device, config.dtype)
        if config.model and is_hub_id(config.model):  # what a LoRA adapter names as its base: the Hub id itself
            model.name_or_path = config.model.partition("@")[0]
        if tokenizer is None:
            raise InputError(f"--model {config.model or start}: no tokenizer.json next to the model")
        policy, reference = policy_and_reference(model, config)
        del model
        trainer = GRPOLoop(config, policy, tokenizer, task, reference, start_model=os.path.abspath(start))
    for line in changes:
        print(line, file=sys.stderr)
    history = trainer.run()
    report(history, trainer)
    return {"history": history, "output_dir": config.output_dir}


def check_ray_installed(config: TrainConfig) -> None:
    """Refuse, before any work, a run with rollout workers where Ray is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise InputError(f"--rollout-workers {config.rollout_workers}: Ray is not installed; "
                         f"pip install 'wgrpo[ray]'")


def model_directory(model: str) -> str:
    """The checkpoint directory `--model` names (a local directory, or a Hub id resolved through the cache), after
    recovering one a killed save left aside; one InputError line naming --model otherwise."""
    from wgrpo.engine import is_hub_id, resolve_model_path

    if not is_hub_id(model):
        recover_beside(model)
    try:
        return str(resolve_model_path(model))
    except InputError as error:
        raise InputError(f"--model {error}") from None


def resume_start(config: TrainConfig) -> str:
    """The model a resumed run started from (its reference), after checking the checkpoint can continue."""
    state = read_state(config.resume)
    state_file = Path(config.resume) / STATE_FILE
    if state["step"] >= config.steps:
        raise InputError(f"--steps {config.steps}: {config.resume} is at step {state['step']} already; give "
                         f"--steps above {state['step']} to train on")
    start = state.get("start_model")
    if not isinstance(start, str) or not start:
        raise InputError(f"--resume {config.resume}: not a GRPO training checkpoint (no start_model in "
                         f"{state_file})")
    start = os.path.abspath(start)  # checkpoints before absolute paths: relative to where the run started
    if config.beta > 0 and not config.use_peft and not Path(start).is_dir():  # LoRA: the base is the reference
        raise InputError(f"{state_file}: start_model {start} does not exist; the KL penalty's reference model is "
                         f"the run's starting checkpoint")
    return start


def report(history: list[dict], trainer: GRPOLoop) -> None:
    """The table the demo ends with: held-out accuracy and format rate before and after GRPO.

    A resumed run evaluates only at its end; the starting evaluation then comes from the run's metrics.jsonl
    when the run continues in the same output directory."""
    logged = read_rows(Path(trainer.config.output_dir) / METRICS_FILE)
    records = [r for r in logged if r["step"] == 0 and "eval_pass@1" in r]
    history = records[:1] + [r for r in history if r["step"] != 0] if records else history
    if not history:
        return
    first, last = history[0], history[-1]
    names = [key[len("eval_rewards/"):-len("/mean")] for key in last if key.startswith("eval_rewards/")]
    names.sort(key=lambda name: name != trainer.task.primary_reward)  # the correctness reward first
    held_out = trainer.task.size("eval")
    problems = trainer.config.eval_problems if held_out is None else min(held_out, trainer.config.eval_problems)
    print(f"\nheld-out, greedy, {problems} {trainer.task.name} problems (pass@1: full marks on "
          f"{trainer.task.primary_reward}):")
    print(f"{'model':<18} {'pass@1':>9}" + "".join(f" {name:>9.9}" for name in names))
    rows = [("base (step 0)", first)] if first["step"] == 0 else []
    rows.append((f"GRPO (step {last['step']})", last))
    for label, record in rows:
        shown = [record.get(f"eval_rewards/{name}/mean", float("nan")) for name in names]
        print(f"{label:<18} {record['eval_pass@1']:>9.1%}" + "".join(f" {value:>9.3f}" for value in shown))
    if len(rows) == 2:
        gain = last["eval_pass@1"] - first["eval_pass@1"]
        print(f"pass@1 change: {gain * 100:+.1f} points; curves: {Path(trainer.config.output_dir) / 'curves.png'}")
