"""`wgrpo bench --grpo`: seconds per GRPO step, split into rollout (generation), reward and update, with the
FLOPs of each phase, so one sees whether rollout's share of the time matches its share of the arithmetic.

Owns: `GRPOBenchConfig`, the fixed setup (task, tokenizer, random model, trainer), the timed steps, the FLOP
estimates, the table and the JSON report. The model's sizes come from `tools.bench_model.ModelBenchConfig`
(the vocabulary from the trained tokenizer); `--quick`, `--trials`, `--json` and `--seed` from
`tools.bench.BenchConfig`. Imports `rl` and the engine lazily (tools may import everything; `wgrpo --help`
stays fast).

The setup: the arithmetic task (2 digits, '+', plain template, no instructions); a byte-level BPE trained on
`--grpo-tokenizer-texts` of its prompts with warm-up-style completions (`rl.train.traces`); a random model of the
ModelBenchConfig sizes; `GRPOLoop` with B prompts x G samples, `--grpo-new-tokens`, temperature 1.0, beta
(a frozen reference model, so the update runs a reference forward). Each step calls `trainer.rollout(step)`
(generation, then the rewards: `Rollout.seconds_generate` / `seconds_reward`) and `trainer.update(rollout)`
(reference forward, policy forward + backward, clipping, AdamW; timed by the wall clock around the call, which
ends on a read-back of the loss), after `--grpo-warmup` untimed steps; figures are medians over the timed steps.

Fixed work (`--grpo-full-length`, the default): a random model samples nearly uniformly, so it would end
completions at random on its end-of-text id or on the `</answer>` stop string, and the work per step would vary.
So the random weights are edited once, before the reference is copied: channel 0 of the residual stream is a
constant 1 (every embedding row holds 1 there and no layer writes to it; the few timed updates barely move
that), and the head's rows of the end-of-text id and of every token whose text holds the last character of a
stop string ('>') read only that channel, with weight -5: the channel dominates the final norm (it comes out
near sqrt(hidden)), so their logits sit near -5 sqrt(hidden) (-55 at 128) whatever the input; they are never
sampled and every
completion runs the full length (checked each step: `full_length_fraction`). The kernels and shapes, hence the
FLOPs, are those of an unedited model; only the values differ.

FLOPs (multiply-add = 2): a forward costs 2 x (the matmul parameters: attention and MLP projections and the
head; embeddings are lookups) per position, plus attention 4 x heads x head_dim x (positions attended) per
layer, causal. Rollout = the prefill of the distinct prompts (padded width) + (new tokens - 1) decode steps of
B x G rows, each attending over its prompt and the tokens so far, + the head on every row at each step. Update =
reference forward + policy forward + backward (2 x forward) = 4 forwards over the padded (B x G, T) batch, the
head on the completion tokens only (the update scores no prompt or padding position).
Sampling, softmax, norms, the loss and AdamW are left out (a few FLOPs per element, not per weight).

`--trl` (`tools.bench_trl`) then runs the same steps, from the same weights, through TRL's GRPOTrainer on torch.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.rl.train.fields import option_flag
from wgrpo.tools import bench_profile
from wgrpo.tools.bench import BenchConfig, _fmt, _progress, _progress_done
from wgrpo.tools.bench_model import ModelBenchConfig, _adapter

PHASES = ("rollout", "reward", "update")
TASK_OPTIONS = {"digits": 2, "ops": "+", "template": "plain", "instructions": False}
BANNED_LOGIT_WEIGHT = -5.0  # the banned rows' weight on the constant channel (normed to ~sqrt(hidden))
QUICK = {"prompts": 2, "group_size": 4, "new_tokens": 8, "tokenizer_texts": 60, "steps": 2}


@dataclass
class GRPOBenchConfig:
    """Options `wgrpo bench --grpo` adds (the model's sizes come from the ModelBenchConfig options)."""

    grpo_prompts: int = field(default=4, metadata={"help": "problems per GRPO step (B); --quick uses 2"})
    grpo_group_size: int = field(default=8, metadata={"help": "completions per problem (G); --quick uses 4"})
    grpo_new_tokens: int = field(default=32, metadata={"help": "new tokens per completion; --quick uses 8"})
    grpo_warmup: int = field(default=1, metadata={
        "help": "untimed GRPO steps first (pipelines compile, buffers fill the pool)"})
    grpo_beta: float = field(default=0.04, metadata={
        "help": "KL weight; > 0 adds the frozen reference model's forward to every update"})
    grpo_tokenizer_texts: int = field(default=300, metadata={
        "help": "arithmetic prompts (with plausible completions) the tokenizer is trained on; --quick uses 60"})
    grpo_full_length: bool = field(default=True, metadata={
        "help": "mask the end-of-text id and stop-string tokens out of the random model's head so every "
                "completion runs the full --grpo-new-tokens (fixed work per step); off: the random model stops "
                "where it happens to sample them"})
    trl: bool = field(default=False, metadata={
        "help": "also run the same GRPO steps through TRL's GRPOTrainer on torch (float32 on --torch-device; "
                "same weights, tokenizer, prompts and rewards) and report TRL's seconds per step / ours (needs the "
                "bench extra: pip install 'wgrpo[bench]')"})
    rollout_workers: int = field(default=0, metadata={
        "help": "then run the same steps on Ray, a learner actor and this many rollout actors (`wgrpo train "
                "--rollout-workers`; needs the ray extra), and report the step by phase, the weight sync's bytes "
                "and seconds, and a projection to more GPUs; 0: one process only"})
    async_rollouts: int = field(default=0, metadata={
        "help": "with --rollout-workers: 1 times the asynchronous schedule (`wgrpo train --async-rollouts 1`)"})

    def __post_init__(self):
        for name in ("grpo_prompts", "grpo_group_size", "grpo_new_tokens", "grpo_tokenizer_texts"):
            if getattr(self, name) < 1:
                raise input_error(f"{option_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.grpo_warmup < 0:
            raise input_error(f"--grpo-warmup must be at least 0, got {self.grpo_warmup}")
        if self.grpo_beta < 0:
            raise input_error(f"--grpo-beta must be at least 0, got {self.grpo_beta}")
        if self.rollout_workers < 0:
            raise input_error(f"--rollout-workers must be at least 0, got {self.rollout_workers}")
        if self.async_rollouts not in (0, 1) or (self.async_rollouts and not self.rollout_workers):
            raise input_error(f"--async-rollouts {self.async_rollouts}: must be 0 or 1, and 1 needs "
                              f"--rollout-workers 1 or more")

    def resolved(self, quick: bool, trials: int) -> dict:
        """The step's shape: prompts, group_size, new_tokens, tokenizer_texts, steps (timed)."""
        if quick:
            return {**QUICK, "steps": trials or QUICK["steps"]}
        return {"prompts": self.grpo_prompts, "group_size": self.grpo_group_size, "new_tokens": self.grpo_new_tokens,
                "tokenizer_texts": self.grpo_tokenizer_texts, "steps": trials or 5}


# ---------------------------------------------------------------------------------------------- the setup


def _tokenizer(task, count: int, vocab_size: int, seed: int):
    """A BPE trained on `count` prompts of the task, each followed by a warm-up-style completion."""
    from wgrpo.engine.tokenizer import train_tokenizer
    from wgrpo.rl.train.traces import warmup_completion

    rng = np.random.default_rng([seed, 11])
    texts = []
    for index in range(count):
        problem = task.sample(index, "train")
        completion, _ = warmup_completion(problem, rng, 0.5)
        texts.append(problem.prompt + completion)
    return train_tokenizer(texts, vocab_size=vocab_size)


def banned_tokens(tokenizer, eos_ids, stops) -> list[int]:
    """The end-of-text ids and every token whose text holds the last character of a stop string: with none of
    them sampled, no completion can end before its length limit."""
    ends = {s[-1] for s in stops}
    banned = set(eos_ids)
    for token in range(tokenizer.get_vocab_size()):
        text = tokenizer.decode([token], skip_special_tokens=False)
        if any(c in text for c in ends):
            banned.add(token)
    return sorted(banned)


def mask_tokens(state: dict[str, np.ndarray], config, banned: list[int]) -> dict[str, np.ndarray]:
    """Edit random weights so the `banned` tokens' logits are about -5 sqrt(hidden) for every input (see the
    module doc)."""
    if config.tie_word_embeddings:
        raise input_error("--grpo-full-length needs an untied head (--no-tie-word-embeddings): the banned rows of "
                         "a tied head would also be their embeddings")
    state = dict(state)
    embed = state["model.embed_tokens.weight"].copy()
    embed[:, 0] = 1.0  # channel 0 of the residual stream: a constant 1
    state["model.embed_tokens.weight"] = embed
    for i in range(config.num_layers):  # no layer writes to channel 0
        for name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            key = f"model.layers.{i}.{name}"
            state[key] = state[key].copy()
            state[key][0, :] = 0.0
    head = state["lm_head.weight"].copy()
    head[banned, :] = 0.0
    head[banned, 0] = BANNED_LOGIT_WEIGHT
    state["lm_head.weight"] = head
    return state


def build_trainer(options: GRPOBenchConfig, model_options: ModelBenchConfig, shape: dict, seed: int, device,
                  output_dir: str):
    """(trainer, setup facts): task, tokenizer, random model (edited for full length), reference, GRPOLoop."""
    from wgrpo.engine import Model
    from wgrpo.engine.tokenizer import END_OF_TEXT
    from wgrpo.rl.rollout import STOP
    from wgrpo.rl.tasks import get_task
    from wgrpo.rl.train.config import TrainConfig
    from wgrpo.rl.train.trainer import GRPOLoop

    if model_options.model_path is not None:
        raise input_error("--grpo times a random model of the size options; --model-path is not supported here")
    task = get_task("arithmetic", **TASK_OPTIONS)
    tokenizer = _tokenizer(task, shape["tokenizer_texts"], model_options.vocab_size, seed)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    prompt_len = max(len(tokenizer.encode(task.sample(i, "train").prompt).ids) for i in range(64))
    config = replace(model_options.model_config(), vocab_size=tokenizer.get_vocab_size(), eos_token_id=eos,
                     pad_token_id=eos, max_position_embeddings=max(256, 2 * (prompt_len + shape["new_tokens"])))
    state = Model.random(config, seed=seed, device=device).state_dict()
    banned = []
    if options.grpo_full_length:
        banned = banned_tokens(tokenizer, (eos,), STOP)
        state = mask_tokens(state, config, banned)
    model = Model.from_numpy(config, state, device, source="random init")
    reference = Model.from_numpy(config, state, device, source="reference") if options.grpo_beta > 0 else None
    task_options = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TASK_OPTIONS.items())
    train = TrainConfig(task="arithmetic", task_options=task_options, output_dir=output_dir, seed=seed,
                        prompts_per_step=shape["prompts"], group_size=shape["group_size"],
                        max_new_tokens=shape["new_tokens"], temperature=1.0, beta=options.grpo_beta,
                        steps=options.grpo_warmup + shape["steps"], eval_every=0)
    trainer = GRPOLoop(train, model, tokenizer, task, reference)
    setup = {"task": "arithmetic", "task_options": dict(TASK_OPTIONS), "prompts": shape["prompts"],
             "group_size": shape["group_size"], "new_tokens": shape["new_tokens"], "temperature": 1.0,
             "beta": options.grpo_beta, "reference_model": reference is not None, "loss_type": train.loss_type,
             "mu": train.mu, "tokenizer_texts": shape["tokenizer_texts"], "eos_token_id": eos,
             "full_length": options.grpo_full_length, "banned_tokens": banned,
             "banned_texts": [tokenizer.decode([t], skip_special_tokens=False) for t in banned]}
    return trainer, setup


# ---------------------------------------------------------------------------------------------- FLOPs


def forward_flops(config, positions: int, attended: int, head_rows: int | None = None) -> float:
    """2 x matmul parameters per position (the head on `head_rows` rows, default all) + attention over
    `attended` (query, key) pairs summed over the positions, per layer."""
    c, kv = config.hidden_size, config.num_kv_heads * config.head_dim
    qd = config.num_heads * config.head_dim
    body = config.num_layers * (c * qd + 2 * c * kv + qd * c + 3 * c * config.intermediate_size)
    head_rows = positions if head_rows is None else head_rows
    attention = config.num_layers * 4 * qd * attended
    return 2.0 * body * positions + 2.0 * config.vocab_size * c * head_rows + attention


def rollout_flops(config, rollout) -> float:
    """Prefill of the distinct prompts (left-padded to the longest) + the decode steps of every sequence."""
    prompts = list(dict.fromkeys(tuple(c.prompt_ids) for c in rollout.completions))
    width = max(len(p) for p in prompts)
    rows = len(rollout.completions)
    flops = forward_flops(config, len(prompts) * width, len(prompts) * width * (width + 1) // 2, head_rows=rows)
    for c in rollout.completions:  # token t (t >= 1) is sampled after feeding token t-1 at position P + t - 1
        fed = max(len(c.token_ids) - 1, 0)
        attended = sum(len(c.prompt_ids) + t for t in range(1, fed + 1))
        flops += forward_flops(config, fed, attended)
    return flops


def update_shape(rollout) -> tuple[int, int]:
    """(rows, width) of the update batch: prompt + completion - 1, right-padded (`rl.batch`)."""
    width = max(len(c.prompt_ids) + len(c.token_ids) for c in rollout.completions) - 1
    return len(rollout.completions), width


def update_flops(config, rollout, reference: bool, mu: int = 1) -> float:
    """(reference forward) + mu x (policy forward + backward = 3 forwards) over the padded batch, the head on the
    completion tokens only (the positions the loss reads)."""
    rows, width = update_shape(rollout)
    scored = sum(len(c.token_ids) for c in rollout.completions)
    forward = forward_flops(config, rows * width, rows * width * (width + 1) // 2, head_rows=scored)
    return forward * ((1 if reference else 0) + 3 * mu)


# ---------------------------------------------------------------------------------------------- the benchmark


_COUNTERS = ("submits", "dispatches", "readbacks", "bind_groups_created")


def _counters(runtime) -> tuple[int, ...]:
    return tuple(getattr(runtime.stats, key) for key in _COUNTERS)


def _delta(after, before) -> dict:
    return {key: a - b for key, a, b in zip(_COUNTERS, after, before)}


def time_step(trainer, step: int) -> dict:
    """One GRPO step: rollout (generation + rewards) and update timed apart, with the runtime counters."""
    cfg = trainer.config
    trainer.step = step  # the update takes the step's scheduled learning rate
    runtime = trainer.model.device.runtime
    c0 = _counters(runtime)
    t0 = time.perf_counter()
    rollout, _ = trainer.rollout(step)
    t1 = time.perf_counter()
    c1 = _counters(runtime)
    metrics = trainer.update(rollout)
    t2 = time.perf_counter()
    c2 = _counters(runtime)
    rows, width = update_shape(rollout)
    lengths = [len(c.token_ids) for c in rollout.completions]
    config = trainer.model.config
    return {"rollout_s": rollout.seconds_generate, "reward_s": rollout.seconds_reward, "update_s": t2 - t1,
            "total_s": t2 - t0, "rollout_call_s": t1 - t0,
            "new_tokens": rollout.new_tokens, "completions": len(lengths),
            "prompt_tokens": sum(len(c.prompt_ids) for c in rollout.completions), "update_rows": rows,
            "update_width": width,
            "full_length_fraction": float(np.mean([n == cfg.max_new_tokens for n in lengths])),
            "finish_reasons": {r: sum(c.finish_reason == r for c in rollout.completions)
                               for r in ("stop", "eos", "length")},
            "rollout_flops": rollout_flops(config, rollout),
            "update_flops": update_flops(config, rollout, trainer.reference is not None, cfg.mu),
            "rollout_counters": _delta(c1, c0), "update_counters": _delta(c2, c1),
            "loss": metrics.get("loss"), "reward_mean": float(rollout.rewards().mean())}


def profile_step(trainer, step: int) -> dict:
    """One more step after the timed ones, rollout and update each profiled (`tools.bench_profile`)."""
    device = trainer.model.device
    _progress("profile: one more step, every dispatch timed ...")
    rollout, rollout_profile = bench_profile.profiled(device, lambda: trainer.rollout(step)[0])
    return {"rollout": rollout_profile, "update": bench_profile.profiled(device, lambda: trainer.update(rollout))[1]}


def summarize(steps: list[dict]) -> dict:
    """Median seconds per phase; tokens, FLOPs, GFLOP/s, shares and the runtime counters per phase."""
    med = lambda key: statistics.median(s[key] for s in steps)  # noqa: E731
    rollout_s, reward_s, update_s, total_s = med("rollout_s"), med("reward_s"), med("update_s"), med("total_s")
    new_tokens, update_tokens = med("new_tokens"), med("update_rows") * med("update_width")
    flops = {"rollout": med("rollout_flops"), "reward": 0.0, "update": med("update_flops")}
    seconds = {"rollout": rollout_s, "reward": reward_s, "update": update_s}
    counters = {"rollout": "rollout_counters", "reward": None, "update": "update_counters"}
    all_flops = sum(flops.values())
    phases = {}
    for phase in PHASES:
        entry = {"seconds": seconds[phase], "time_share": seconds[phase] / total_s, "flops": flops[phase],
                 "flop_share": flops[phase] / all_flops if all_flops else None,
                 "gflops_per_s": flops[phase] / seconds[phase] * 1e-9 if flops[phase] and seconds[phase] else None}
        if phase == "rollout":
            entry.update(tokens=new_tokens, tokens_per_s=new_tokens / rollout_s)
        elif phase == "update":
            entry.update(tokens=update_tokens, tokens_per_s=update_tokens / update_s)
        if counters[phase]:  # rollout's counters include the rewards, which are host-only
            for key in _COUNTERS:
                values = sorted({s[counters[phase]][key] for s in steps})
                entry[key] = values[0] if len(values) == 1 else values
        phases[phase] = entry
    total = {"seconds": total_s, "flops": all_flops, "gflops_per_s": all_flops / total_s * 1e-9,
             "other_seconds": max(0.0, total_s - rollout_s - reward_s - update_s)}
    return {"phases": phases, "total": total}


def verdict(summary: dict) -> dict:
    r, u = summary["phases"]["rollout"], summary["phases"]["update"]
    excess = r["time_share"] / r["flop_share"] if r["flop_share"] else None
    ratio = u["gflops_per_s"] / r["gflops_per_s"] if r["gflops_per_s"] and u["gflops_per_s"] else None
    text = (f"rollout takes {r['time_share']:.0%} of the step time for {_fmt(r['flop_share'], '.0%')} of its FLOPs "
            f"({_fmt(excess, '.2f')}x its arithmetic share); the update runs at {_fmt(ratio, '.1f')}x rollout's "
            f"GFLOP/s")
    if excess is not None:
        text += ": rollout dominates more than its arithmetic does" if excess > 1.25 else \
            (": rollout's time share matches its arithmetic" if excess >= 0.8 else
             ": rollout takes less time than its arithmetic share")
    return {"rollout_time_share": r["time_share"], "rollout_flop_share": r["flop_share"],
            "time_share_over_flop_share": excess, "update_over_rollout_gflops": ratio, "text": text}


def run_grpo_bench(options: GRPOBenchConfig, model_options: ModelBenchConfig, bench: BenchConfig,
                   device_spec: str | None = None) -> int:
    """Build the fixed setup, run the warm-up and timed steps; table to stdout, progress to stderr."""
    from wgrpo.engine.device import get_device

    device = get_device(device_spec)
    if bench.profile:
        bench_profile.require_timestamps(device)
    if options.trl:  # a missing extra or an unusable --torch-device is named before any work
        from wgrpo.tools import bench_trl

        spec = bench_trl.pin_one_card(model_options.torch_device, device.is_software)  # before CUDA starts
        bench_trl.require_trl()
        torch_device = bench_trl.resolve_trl_device(spec, device.is_software, model_options.torch_device)
    if options.rollout_workers:  # a missing extra is named before any work
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise input_error(f"--rollout-workers {options.rollout_workers}: Ray is not installed; "
                              f"pip install 'wgrpo[ray]'")
    shape = options.resolved(bench.quick, bench.trials)
    with tempfile.TemporaryDirectory(prefix="wgrpo-bench-grpo-") as output_dir:
        _progress("setup: tokenizer, random model, reference, trainer ...")
        trainer, setup = build_trainer(options, model_options, shape, bench.seed, device, output_dir)
        steps = []
        total = options.grpo_warmup + shape["steps"]
        if options.trl:  # TRL starts where wgrpo does: these weights, before any update
            start = bench_trl.capture_start(trainer, total, output_dir)
        if options.rollout_workers:  # so do the actors
            from wgrpo.tools import bench_cluster

            cluster_start = bench_cluster.save_start(trainer, os.path.join(output_dir, "start"))
        for step in range(total):
            timed = step >= options.grpo_warmup
            what = f"{step - options.grpo_warmup + 1}/{shape['steps']}" if timed else \
                f"warm-up {step + 1}/{options.grpo_warmup}"
            _progress(f"GRPO step {what} ...")
            record = time_step(trainer, step)
            if timed:
                steps.append(record)
        profile = profile_step(trainer, total) if bench.profile else None
        trl = None
        if options.trl:  # right after ours, in its own steady state, as `bench --model` times torch
            _progress("TRL: the same model, tokenizer, prompts and rewards ...")
            trl = bench_trl.run_trl_steps(start, trainer.config, shape, options.grpo_warmup,
                                          model_options.resolved_threads(), os.path.join(output_dir, "trl"),
                                          torch_device)
        cluster = None
        if options.rollout_workers:
            cluster = bench_cluster.run_cluster_steps(trainer, cluster_start, options.rollout_workers,
                                                      bool(options.async_rollouts), options.grpo_warmup,
                                                      shape["steps"], os.path.join(output_dir, "ray"), device_spec)
    _progress_done()
    config = trainer.model.config
    report = {"adapter": _adapter(device),
              "config": {**asdict(options), "quick": bench.quick, "seed": bench.seed, "timed_steps": shape["steps"]},
              "model": {**asdict(config), "num_parameters": config.num_parameters()},
              "setup": setup, **summarize(steps), "steps": steps, "notes": []}
    report["verdict"] = verdict(report)
    if profile is not None:
        report["profile"] = profile
    if trl is not None:
        report["trl"] = trl
        report["comparison"] = bench_trl.compare(report)
    if cluster is not None:
        report["cluster"] = cluster
        report["cluster_comparison"] = bench_cluster.compare(report)
    full = min(s["full_length_fraction"] for s in steps)
    if options.grpo_full_length and full < 1:
        report["notes"].append(f"only {full:.0%} of the completions ran the full length in some step: the masked "
                               f"logits drifted; the work per step was not fixed")
    elif not options.grpo_full_length:
        report["notes"].append("--no-grpo-full-length: completions stop where the random model samples end-of-text "
                               "or a stop string, so the work per step varies")
    print(format_grpo_report(report))
    if trl is not None:
        print(bench_trl.format_comparison(report))
    if cluster is not None:
        print(bench_cluster.format_cluster_report(report))
    for phase, phase_profile in (profile or {}).items():
        print(bench_profile.format_profile(f"{phase} (profiled step)", phase_profile))
    if bench.json:
        with open(bench.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


def format_grpo_report(report: dict) -> str:
    a, m, s = report["adapter"], report["model"], report["setup"]
    opts = s["task_options"]
    lines = [f"GRPO step on [{a['index']}] {a['name']} ({a['backend']}, {a['type']})",
             f"task: arithmetic ({opts['digits']} digits, '{opts['ops']}', {opts['template']} template); "
             f"B={s['prompts']} prompts x G={s['group_size']} = {s['prompts'] * s['group_size']} completions of "
             f"{s['new_tokens']} new tokens, temperature {s['temperature']:g}, beta {s['beta']:g} "
             f"({'with' if s['reference_model'] else 'no'} reference forward), loss {s['loss_type']}, mu {s['mu']}",
             f"model: random {m['architecture']}, vocab {m['vocab_size']} (BPE on {s['tokenizer_texts']} prompts + "
             f"completions), hidden {m['hidden_size']}, {m['num_layers']} layers, {m['num_heads']}/{m['num_kv_heads']} "
             f"heads, intermediate {m['intermediate_size']}: {m['num_parameters'] / 1e6:.3g} M parameters, float32",
             f"{report['config']['timed_steps']} timed steps after {report['config']['grpo_warmup']} warm-up, median"]
    rows = [("phase", "s/step", "time %", "tokens", "tokens/s", "GFLOP", "GFLOP/s", "FLOP %", "submits",
             "read-backs", "dispatches", "new bind groups")]
    for phase, e in report["phases"].items():
        rows.append((phase, f"{e['seconds']:.4f}", f"{e['time_share']:.0%}", _fmt(e.get("tokens"), ".0f"),
                     _fmt(e.get("tokens_per_s"), ".0f"), f"{e['flops'] * 1e-9:.3f}", _fmt(e["gflops_per_s"], ".2f"),
                     _fmt(e["flop_share"], ".0%"), str(e.get("submits", "-")), str(e.get("readbacks", "-")),
                     str(e.get("dispatches", "-")), str(e.get("bind_groups_created", "-"))))
    t = report["total"]
    rows.append(("total", f"{t['seconds']:.4f}", "100%", "", "", f"{t['flops'] * 1e-9:.3f}",
                 f"{t['gflops_per_s']:.2f}", "100%", "", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("tokens: rollout = new tokens sampled; update = positions of the padded (B x G, T) batch, each "
                 "through the reference forward and the policy forward + backward; new bind groups: those the step "
                 "built, the rest were cache hits (a step that repeats the last one's work should build none)")
    if s["full_length"]:
        lines.append(f"fixed work: end-of-text and the tokens holding '>' ({len(s['banned_tokens'])} of "
                     f"{m['vocab_size']}, so no '</answer>' stop) are masked out of the random model's head; "
                     f"every completion runs all {s['new_tokens']} tokens")
    lines.append(f"verdict: {report['verdict']['text']}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
