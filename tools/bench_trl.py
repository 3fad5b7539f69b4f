"""`wgrpo bench --grpo --trl`: the same GRPO steps through TRL's GRPOTrainer on torch, timed the same way, and
the ratio to wgrpo's.

Owns: the check that TRL is importable (`require_trl`, before any work), the card TRL trains on (`pin_one_card`,
`resolve_trl_device`), the start of the run TRL gets (`capture_start`: wgrpo's random model before its first
update, saved with `save_pretrained`, its tokenizer and the problems wgrpo's steps draw, in order), the
GRPOConfig that matches wgrpo's `TrainConfig` (`trl_config_kwargs`), the timed TRL steps (`run_trl_steps`), the
comparison (`compare`) and its table. Imports torch, transformers, datasets and trl lazily: the `bench` extra.

TRL's side: `AutoModelForCausalLM.from_pretrained` of the saved weights in float32 (TRL builds its reference
model from the same directory), the saved tokenizer.json as a `PreTrainedTokenizerFast` (end-of-text as eos and
pad, left padding), the same prompts in the same order (`shuffle_dataset=False`), and the arithmetic task's
reward functions (`rl.reward_funcs`' accuracy and format, TRL's signature) with wgrpo's weights. One generation
per optimizer step: `per_device_train_batch_size = generation_batch_size = B x G`, no gradient accumulation,
`num_iterations = mu`; float32 (no bf16 nor fp16, TF32 off) on `--torch-device` (`use_cpu` only for the CPU),
no gradient checkpointing (wgrpo's update keeps every activation), no logging, saving, reporting or evaluation.
The learning rate follows wgrpo's cosine with its warm-up and floor as transformers' `cosine_with_min_lr` (whose
warm-up starts at 0, wgrpo's at lr / warm-up steps). The edited head (see `tools.bench_grpo`) never samples
end-of-text nor '>', so TRL's completions run the full length too (checked each step).

A step is timed from the trainer's `on_step_begin` to its `on_step_end` (a `TrainerCallback`): generation,
rewards, the reference forward, policy forward and backward, clipping, AdamW and the scheduler. Phases, by
wrapping the trainer's own methods: rollout = `_generate` (tokenizing the prompts, transformers' `generate`,
decoding), reward = `_calculate_rewards`, and `_generate_and_score_completions` (both, plus the reference
forward and the advantages); update = the step less rollout and reward, as wgrpo's update holds the reference
forward. Figures are medians over the timed steps, after the same warm-up steps as wgrpo's. On CUDA each timed
region ends in `torch.cuda.synchronize`.

The card: transformers' Trainer trains on cuda:0 and, with several cards visible, wraps the model in
`nn.DataParallel` over all of them (multiplying the batch by their number). So before anything in the process
starts CUDA, `pin_one_card` leaves only the chosen card visible (`CUDA_VISIBLE_DEVICES`: cuda:N of those visible
before, the first for cuda and auto); the Trainer's cuda:0 is then that card, and `resolve_trl_device` refuses
to go on when torch still sees more than one (CUDA had started before the pin).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
import warnings
from pathlib import Path

from wgrpo.rl.errors import input_error
from wgrpo.tools.bench import _fmt, _progress
from wgrpo.tools.torch_twin import parse_torch_device, resolve_torch_device, synchronize, torch_device_label, \
    torch_device_report

TRL_HINT = "pip install 'wgrpo[bench]'"
PHASES = ("rollout", "reward", "update", "total")
# wgrpo's lr_scheduler_type -> transformers' (warm-up then decay to lr * min_lr_ratio)
SCHEDULERS = {"cosine": "cosine_with_min_lr", "linear": "linear", "constant_with_warmup": "constant_with_warmup",
              "constant": "constant"}
SCALE_REWARDS = {"std": "group", "none": "none"}  # wgrpo's --scale-rewards -> TRL's
START_MODEL = "start-model"  # the directory under the run's temporary directory holding the saved model


def require_trl() -> dict[str, str]:
    """The versions of trl, transformers and torch; InputError naming the extra when one cannot be imported."""
    try:
        import datasets  # noqa: F401
        import torch
        import transformers
        import trl
    except ImportError as error:
        raise input_error(f"--trl runs TRL's GRPOTrainer, which is not importable here ({error}); install it "
                          f"with {TRL_HINT}") from None
    return {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def pin_one_card(spec: str, adapter_is_cpu: bool) -> str:
    """Leave only the CUDA card `--torch-device spec` names visible (CUDA_VISIBLE_DEVICES) and return the spec
    naming it afterwards ("cuda:0"; "auto" stays "auto"); "cpu", and "auto" on a CPU adapter, touch nothing.
    Effective only before CUDA starts in this process (see the module doc)."""
    spec = parse_torch_device(spec)
    if spec == "cpu" or (spec == "auto" and adapter_is_cpu):
        return spec
    index = int(spec.split(":")[1]) if ":" in spec else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:  # every card visible: cuda:N is card N
        card = str(index)
    else:  # cuda:N is the N-th of those listed
        cards = [card.strip() for card in visible.split(",")]
        if index >= len(cards):
            raise input_error(f"--torch-device {spec}: CUDA_VISIBLE_DEVICES={visible} makes {len(cards)} card(s) "
                              f"visible, cuda:0 to cuda:{len(cards) - 1}")
        card = cards[index]
    os.environ["CUDA_VISIBLE_DEVICES"] = card
    return spec if spec == "auto" else "cuda:0"


def resolve_trl_device(spec: str, adapter_is_cpu: bool, asked: str) -> str:
    """"cpu" or "cuda:0" (the pinned card) for TRL's side, from `pin_one_card`'s `spec` for `--torch-device asked`;
    InputError when CUDA is asked for and cannot be used, or when torch sees several cards (the Trainer would
    spread over them)."""
    device = resolve_torch_device(spec, adapter_is_cpu, asked)
    if device != "cpu":
        import torch

        count = torch.cuda.device_count()
        if count != 1 or device != "cuda:0":
            raise input_error(f"--torch-device {asked} with --trl: torch sees {count} CUDA cards (CUDA started before "
                              f"one could be pinned) and TRL's Trainer would spread over them; choose the card with "
                              f"CUDA_VISIBLE_DEVICES=N and --torch-device cuda")
    return device


def problem_rows(trainer, steps: int) -> list[dict]:
    """TRL dataset rows (prompt, answer) of the problems wgrpo's `trainer` draws in steps 0 .. steps-1, in order."""
    rows = []
    for step in range(steps):
        for index in trainer.problem_indices(step, 0):
            problem = trainer.task.sample(index, "train")
            rows.append({"prompt": problem.prompt, "answer": problem.answer})
    return rows


def capture_start(trainer, steps: int, directory: str | Path) -> dict:
    """What TRL's run starts from, taken before wgrpo's first update moves the weights: the model and tokenizer
    saved into `directory`/START_MODEL, the problems of `steps` steps, the reward functions and weights."""
    from wgrpo.rl.reward_funcs import BUILTIN_REWARDS

    path = Path(directory) / START_MODEL
    trainer.model.save_pretrained(path, tokenizer=trainer.tokenizer)
    names = list(trainer.task.reward_names)
    return {"checkpoint": str(path), "rows": problem_rows(trainer, steps),
            "reward_funcs": [BUILTIN_REWARDS[name] for name in names], "reward_names": names,
            "reward_weights": [float(trainer.weights.get(name, 0.0)) for name in names]}


def trl_config_kwargs(train, shape: dict, max_steps: int, output_dir: str, reward_weights: list[float],
                      torch_device: str = "cpu") -> dict:
    """GRPOConfig's arguments for wgrpo's TrainConfig `train`, the bench's B x G x N shape and the resolved torch
    device ("cpu", or "cuda:0": the one visible card, where the Trainer puts the model when use_cpu is False)."""
    rows = shape["prompts"] * shape["group_size"]
    scheduler = SCHEDULERS[train.lr_scheduler_type]
    return dict(
        output_dir=output_dir, seed=train.seed, max_steps=max_steps,
        # one generation of B x G completions per optimizer step, one micro-batch
        num_generations=shape["group_size"], per_device_train_batch_size=rows, generation_batch_size=rows,
        gradient_accumulation_steps=1, num_iterations=train.mu, shuffle_dataset=False,
        max_completion_length=shape["new_tokens"], temperature=train.temperature, top_k=train.top_k,
        top_p=train.top_p,
        # the loss and the optimizer as wgrpo's
        beta=train.beta, loss_type=train.loss_type, epsilon=train.eps_low, epsilon_high=train.eps_high,
        scale_rewards=SCALE_REWARDS[train.scale_rewards], reward_weights=reward_weights,
        learning_rate=train.lr, lr_scheduler_type=scheduler, warmup_steps=train.warmup_lr_steps,
        lr_scheduler_kwargs={"min_lr_rate": train.min_lr_ratio} if scheduler == "cosine_with_min_lr" else None,
        weight_decay=train.weight_decay, adam_beta1=train.adam_beta1, adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon, max_grad_norm=train.grad_clip,
        # float32 (TF32 off on CUDA), every activation kept (wgrpo's bench does not checkpoint)
        use_cpu=torch_device == "cpu", bf16=False, fp16=False, tf32=False, gradient_checkpointing=False,
        # nothing besides the steps
        report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        log_completions=False, dataloader_num_workers=0)


class _StepClock:
    """Per-step seconds of the whole step and of the wrapped trainer methods, and the step's work."""

    def __init__(self, warmup: int, steps: int, new_tokens: int, sync=lambda: None):
        self.warmup, self.steps, self.new_tokens, self.sync = warmup, steps, new_tokens, sync
        self.records: list[dict] = []
        self.current: dict = {}
        self.started = 0.0

    def wrap(self, trainer, name: str, key: str) -> bool:
        """Time `trainer.name` into the step's `key`; False when this TRL has no such method."""
        method = getattr(trainer, name, None)
        if method is None:
            return False

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            result = method(*args, **kwargs)
            self.sync()
            self.current[key] = self.current.get(key, 0.0) + time.perf_counter() - start
            if name == "_generate":  # (prompt_ids, completion_ids, ...): the work TRL did
                prompt_ids, completion_ids = result[0], result[1]
                lengths = [len(ids) for ids in completion_ids]
                self.current.update(completions=len(lengths), new_tokens=sum(lengths),
                                    prompt_tokens=sum(len(ids) for ids in prompt_ids),
                                    full_length_fraction=sum(n == self.new_tokens for n in lengths) / len(lengths))
            return result

        setattr(trainer, name, timed)
        return True

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                step = state.global_step
                what = f"{step - clock.warmup + 1}/{clock.steps}" if step >= clock.warmup else \
                    f"warm-up {step + 1}/{clock.warmup}"
                _progress(f"TRL GRPO step {what} ...")
                clock.current = {}
                clock.sync()
                clock.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.sync()
                clock.current["total_s"] = time.perf_counter() - clock.started
                clock.records.append(clock.current)

        return StepTimer()


def run_trl_steps(start: dict, train, shape: dict, warmup: int, threads: int, output_dir: str,
                  torch_device: str = "cpu") -> dict:
    """Run `warmup` + `shape['steps']` TRL GRPO steps from `start` (`capture_start`) on `torch_device`
    (`resolve_trl_device`'s); the timed steps' records, their medians and the configuration TRL ran."""
    import torch
    import transformers
    import trl
    from datasets import Dataset

    from wgrpo.engine.tokenizer import END_OF_TEXT

    torch.set_num_threads(threads)
    with _quiet(transformers):
        model = transformers.AutoModelForCausalLM.from_pretrained(start["checkpoint"], dtype=torch.float32)
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(Path(start["checkpoint"]) / "tokenizer.json"), padding_side="left")
        tokenizer.eos_token = tokenizer.pad_token = END_OF_TEXT
        total = warmup + shape["steps"]
        kwargs = trl_config_kwargs(train, shape, total, output_dir, start["reward_weights"], torch_device)
        if "activation_checkpointing" in {f.name for f in dataclasses.fields(trl.GRPOConfig)}:
            kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")  # transformers 5's name
        args = trl.GRPOConfig(**kwargs)
        clock = _StepClock(warmup, shape["steps"], shape["new_tokens"], lambda: synchronize(torch, torch_device))
        trainer = trl.GRPOTrainer(model=model, reward_funcs=start["reward_funcs"], args=args,
                                  train_dataset=Dataset.from_list(start["rows"]), processing_class=tokenizer,
                                  callbacks=[clock.callback()])
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # it prints the run's last log
        phases = {name: clock.wrap(trainer, name, key) for name, key in (
            ("_generate", "rollout_s"), ("_calculate_rewards", "reward_s"),
            ("_generate_and_score_completions", "generate_and_score_s"))}
        trainer.train()
    steps = clock.records[warmup:]
    for record in steps:
        if phases["_generate"] and phases["_calculate_rewards"]:
            record["update_s"] = record["total_s"] - record["rollout_s"] - record["reward_s"]
    return {"versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                         "torch": torch.__version__},
            **torch_device_report(torch_device, threads), "n_gpu": args.n_gpu,
            "model_device": str(next(trainer.model.parameters()).device), "dtype": "float32",
            "attention": getattr(model.config, "_attn_implementation", None),
            "optim": str(getattr(args.optim, "value", args.optim)), "lr_scheduler_type": kwargs["lr_scheduler_type"],
            "config": {k: v for k, v in kwargs.items() if k != "output_dir"},
            "reward_funcs": start["reward_names"], "timed_phases": [name for name, ok in phases.items() if ok],
            "reference_model": trainer.ref_model is not None, "steps": steps, "summary": _summary(steps)}


@contextlib.contextmanager
def _quiet(transformers):
    """transformers' and TRL's notices, deprecation warnings and loading bars are not the bench's output."""
    verbosity, bars = transformers.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _summary(steps: list[dict]) -> dict:
    """Median seconds of each phase (None where it was not timed), the generation share and the work per step."""
    def med(key):
        values = [s[key] for s in steps if key in s]
        return statistics.median(values) if len(values) == len(steps) and values else None

    out = {f"{key}_s": med(f"{key}_s") for key in (*PHASES, "generate_and_score")}
    total = out["total_s"]
    out["rollout_share"] = out["rollout_s"] / total if out["rollout_s"] is not None and total else None
    for key in ("completions", "new_tokens", "prompt_tokens"):
        out[key] = med(key)
    fractions = [s["full_length_fraction"] for s in steps if "full_length_fraction" in s]
    out["full_length_fraction"] = min(fractions) if fractions and len(fractions) == len(steps) else None
    return out


def _work(steps: list[dict]) -> dict:
    """Completions, new tokens and prompt tokens per step: one value when every step did the same, else the list."""
    out = {}
    for key in ("completions", "new_tokens", "prompt_tokens"):
        values = sorted({s.get(key) for s in steps}, key=str)
        out[key] = values[0] if len(values) == 1 else values
    return out


def compare(report: dict) -> dict:
    """Per phase: wgrpo's and TRL's median seconds per step and TRL / wgrpo (> 1: wgrpo is faster); whether both
    sides did the same work in every timed step."""
    ours, theirs = report["steps"], report["trl"]["steps"]
    ours_work = _work([{"completions": s["completions"], "new_tokens": s["new_tokens"],
                        "prompt_tokens": s["prompt_tokens"]} for s in ours])
    theirs_work = _work(theirs)
    seconds = {"rollout": report["phases"]["rollout"]["seconds"], "reward": report["phases"]["reward"]["seconds"],
               "update": report["phases"]["update"]["seconds"], "total": report["total"]["seconds"]}
    trl_summary = report["trl"]["summary"]
    rows = {}
    for phase in PHASES:
        trl_s = trl_summary[f"{phase}_s"]
        rows[phase] = {"wgrpo_s": seconds[phase], "trl_s": trl_s,
                       "ratio": trl_s / seconds[phase] if trl_s is not None and seconds[phase] else None}
    equal = [s["completions"] for s in ours] == [s.get("completions") for s in theirs] and \
        [s["new_tokens"] for s in ours] == [s.get("new_tokens") for s in theirs] and \
        [s["prompt_tokens"] for s in ours] == [s.get("prompt_tokens") for s in theirs]
    spread = {side: {"best_s": min(s["total_s"] for s in records), "worst_s": max(s["total_s"] for s in records)}
              for side, records in (("wgrpo", ours), ("trl", theirs))}
    return {"phases": rows, "ratio": rows["total"]["ratio"], "equal_work": equal, "step_spread": spread,
            "best_ratio": spread["trl"]["best_s"] / spread["wgrpo"]["best_s"],
            "work_per_step": {"wgrpo": ours_work, "trl": theirs_work},
            "rollout_share": {"wgrpo": report["phases"]["rollout"]["time_share"],
                              "trl": trl_summary["rollout_share"]}}


def format_comparison(report: dict) -> str:
    t, c = report["trl"], report["comparison"]
    v = t["versions"]
    lines = [f"against TRL {v['trl']} GRPOTrainer (transformers {v['transformers']}, torch {v['torch']}, float32 on "
             f"{torch_device_label(t)}, attention {t['attention']}, {t['optim']}), the same weights, "
             f"tokenizer, prompts and rewards:"]
    rows = [("phase", "wgrpo s/step", "TRL s/step", "TRL / wgrpo")]
    for phase, e in c["phases"].items():
        rows.append((phase, f"{e['wgrpo_s']:.4f}", _fmt(e["trl_s"], ".4f"), _fmt(e["ratio"], ".2f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    w = c["work_per_step"]["trl"]
    lines.append(f"ratio: TRL's seconds per step / wgrpo's; above 1, wgrpo is faster. TRL's rollout is its "
                 f"_generate (transformers' generate), its update the rest of the step (reference forward, policy "
                 f"forward + backward, AdamW); rollout's share of the step: wgrpo "
                 f"{_fmt(c['rollout_share']['wgrpo'], '.0%')}, TRL {_fmt(c['rollout_share']['trl'], '.0%')}")
    spread = c["step_spread"]
    lines.append(f"timed steps: wgrpo {spread['wgrpo']['best_s']:.4f} to {spread['wgrpo']['worst_s']:.4f} s, TRL "
                 f"{spread['trl']['best_s']:.4f} to {spread['trl']['worst_s']:.4f} s; best step against best step: "
                 f"{c['best_ratio']:.2f} (a wide spread means the host was busy with other work)")
    if c["equal_work"]:
        lines.append(f"equal work: both sides ran {w['completions']} completions of {report['setup']['new_tokens']} "
                     f"tokens ({w['new_tokens']} new tokens) on {w['prompt_tokens']} prompt tokens in every timed step")
    else:
        lines.append(f"note: unequal work per step: wgrpo {c['work_per_step']['wgrpo']}, TRL {w}")
    full = t["summary"]["full_length_fraction"]
    if full is not None and full < 1:
        lines.append(f"note: only {full:.0%} of TRL's completions ran the full length in some step")
    return "\n".join(lines)
