"""The GRPO trainer (`wgrpo train`): rollout, rewards, group advantages, clipped policy updates, evaluation,
metrics and checkpoints.

Owns: the step loop (its options are `rl.train.config.TrainConfig`).
Randomness is a pure function of (seed, step): problems, sampling seeds and the data order; so `--resume` from
a checkpoint continues exactly as the uninterrupted run would (same adapter). Data order: step s trains on the
next prompts_per_step problems of the epoch permutations (`schedule.epoch_order`), so each epoch visits every
training problem once; dynamic sampling's extra rounds draw from a stream of their own
(`schedule.resample_order`) and leave the epochs whole.

SIGINT (Ctrl-C) and SIGTERM while `run()` trains finish the step in progress (a second signal abandons its
sampling, or its evaluation, which is then missing from that step's row), save `output_dir/checkpoint-N` (as
periodic checkpoints are), print on stderr the line `wgrpo: resume with: wgrpo train --resume
OUTPUT_DIR/checkpoint-N` (a resumed run takes its options from the checkpoint) and raise `SystemExit(130)`
(SIGINT) or `SystemExit(143)` (SIGTERM); see `rl.train.stop`.

metrics.jsonl: one row per step (`step` = the number of updates done; row 0 is the evaluation before training),
with the sampling metrics of `rl.train.step_metrics` (TRL's names: `reward`, `reward_std`, `rewards/<name>/mean`,
`completions/mean_length`, `completions/clipped_ratio`, `frac_reward_zero_std`, `entropy`, ...); the update's,
over the groups trained on: `loss`, `kl` (with a reference), `clip_ratio/low_mean`, `clip_ratio/high_mean`,
`ratio_mean`, `tokens`, `grad_norm` (with clipping), `learning_rate`, `micro_batches` (forward and backward
passes per optimizer step; see `rl.train.update`); time: `time/update` and `update_tokens_per_s` beside the
sampling's; at evaluation steps `eval_reward`, `eval_pass@1`, `eval_rewards/<name>/mean`,
`eval_completions/mean_length` (greedy, held-out problems; a task without held-out problems is not evaluated).
Every `logging_steps` steps the rows' means also go to `report_to`, the callbacks and the completions table
(`rl.train.run_log`). Callbacks (transformers' protocol, `rl.train.callbacks`) hear on_train_begin,
on_step_end, on_evaluate, on_log, on_save and on_train_end; one that sets `control.should_training_stop` ends the
run after that step, with a checkpoint. curves.png is redrawn at evaluation steps and at the end.

Talks to `engine` for the model, generation and the loss; never imports wgpu.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from wgrpo.engine import InputError
from wgrpo.rl.grpo import dynamic_sampling_filter
from wgrpo.rl.rollout import Completion, Rollout, sample_and_score
from wgrpo.rl.train.callbacks import CallbackHandler, TrainerControl, TrainerState
from wgrpo.rl.train.checkpoint import load_training_state, prune_checkpoints, recover
from wgrpo.rl.train.config import TrainConfig
from wgrpo.rl.train.evaluate import check_prompts_fit, evaluate
from wgrpo.rl.train.learner import Learner
from wgrpo.rl.train.metrics_log import METRICS_FILE
from wgrpo.rl.train.progress import Progress
from wgrpo.rl.train.reporting import check_report_to
from wgrpo.rl.train.run_log import RunLog
from wgrpo.rl.train.schedule import epoch_order, resample_order
from wgrpo.rl.train.step_metrics import StepSample, completion_table, sampling_metrics, zero_signal_groups
from wgrpo.rl.train.stop import StopNow, StopOnSignal, resume_command
from wgrpo.rl.train.task_options import task_of

RESUME_COMMAND = "wgrpo train"


class GRPOLoop:
    """Holds the policy, the frozen reference, the optimizer and the task; `run()` trains."""

    def __init__(self, config: TrainConfig, model, tokenizer, task, reference=None, start_step: int = 0,
                 start_model: str = "", *, callbacks=(), args=None, log_history: Sequence[dict] = (),
                 resume_hint: Callable[[Path], str] | None = None, learner=None):
        # `learner`: the policy side when it lives elsewhere (`rl.cluster`'s actor; then model is None)
        self.learner = Learner(config, model, tokenizer, reference) if learner is None else learner
        self.config, self.tokenizer, self.task = config, tokenizer, task
        self.weights = config.weights(task)
        check_report_to(config.report_to)  # a missing integration is named before any work
        task.use_tokenizer(tokenizer)  # conversational prompts are rendered with the model's chat template
        longest_prompt = self._check_task(self.learner.model_config, tokenizer, task)
        self.memory_estimate = self.learner.check_memory(longest_prompt)
        self.step = start_step
        # transformers' callback protocol: `args` is what the callbacks see as the run's arguments
        self.args = config if args is None else args
        self.callbacks = callbacks if isinstance(callbacks, CallbackHandler) else CallbackHandler(list(callbacks))
        train_size = task.size("train")
        epochs = config.prompts_per_step / train_size if train_size else 0.0  # per step
        self.state = TrainerState(global_step=start_step, max_steps=config.steps, epoch=start_step * epochs,
                                  num_train_epochs=config.steps * epochs, logging_steps=config.logging_steps,
                                  eval_steps=config.eval_every, save_steps=config.save_every,
                                  train_batch_size=config.per_device_train_batch_size or
                                  config.prompts_per_step * config.group_size, log_history=list(log_history))
        self.control = TrainerControl()
        self.resume_hint = resume_hint or (lambda checkpoint: resume_command(RESUME_COMMAND, checkpoint))
        task.trainer_state = self.state  # reward functions receive it, as in TRL
        self.start_model = start_model  # the checkpoint GRPO started from, also the reference model
        self.output = Path(config.output_dir)
        self.output.mkdir(parents=True, exist_ok=True)
        recover(self.output)  # saves a kill cut short, before this run saves anything

    @property
    def model(self):
        """The policy (None when the learner runs in another process)."""
        return getattr(self.learner, "model", None)

    @property
    def optimizer(self):
        return getattr(self.learner, "optimizer", None)

    @property
    def reference(self):
        return getattr(self.learner, "reference", None)

    @property
    def pad_id(self) -> int:
        return self.learner.pad_id

    def _check_task(self, model_config, tokenizer, task) -> int:
        """Refuse, before any work, a task whose prompts cannot fit the model with max_new_tokens after them
        (or are longer than max_prompt_length); else the tokens of the longest prompt checked."""
        if task.size("train") == 0:
            raise InputError(f"task {task.name!r} has no training problems")
        return check_prompts_fit(task, tokenizer, model_config, self.config.max_new_tokens,
                                 max_prompt_length=self.config.max_prompt_length)

    @property
    def evaluates(self) -> bool:
        """Whether the task holds out problems to evaluate on (a dataset without eval_dataset does not)."""
        return (self.task.size("eval") is None or self.task.size("eval") > 0) and self.config.eval_problems > 0

    # ------------------------------------------------------------------ one step

    def problem_indices(self, step: int, round_: int) -> list[int]:
        """The task's train indices that sampling round `round_` of `step` draws: the main stream for round 0,
        the resampling stream for dynamic sampling's extra rounds."""
        cfg, n = self.config, self.task.size("train")
        if round_ == 0:
            return epoch_order(step, cfg.prompts_per_step, n, cfg.seed)
        return resample_order(step, round_, cfg.prompts_per_step, n, cfg.seed)

    def sample_step(self, step: int) -> StepSample:
        """Sample and score this step's groups; with dynamic sampling, resample until enough carry signal."""
        cfg = self.config
        wanted, size = cfg.prompts_per_step, cfg.group_size
        indices, rounds, kept = [], [], []
        groups: list[list[Completion]] = []
        while len(kept) < wanted and len(rounds) < cfg.max_sampling_rounds:
            order = self.problem_indices(step, len(rounds))
            problems = [self.task.sample(i, "train") for i in order]
            batch = self.sample_round(problems, seed=hash_seed(cfg.seed, step, len(rounds)))
            groups = [batch.completions[g * size : (g + 1) * size] for g in range(wanted)]
            keep = dynamic_sampling_filter(batch.rewards()) if cfg.dynamic_sampling else np.ones(wanted, bool)
            kept.extend(group for group, k in zip(groups, keep) if k)
            indices.append(order)
            rounds.append(batch)
            if not cfg.dynamic_sampling:
                break
        if not kept:  # every group was uniform in every round: train on the last batch, its advantages are 0
            kept = groups
        completions = [c for group in kept[:wanted] for c in group]
        return StepSample(indices, rounds, Rollout(completions, size, 0.0, 0.0))

    def sample_round(self, problems: list, seed: int) -> Rollout:
        """group_size completions of each of `problems`, scored: one sampling round of a step."""
        cfg = self.config
        return sample_and_score(self.model, self.tokenizer, self.task, problems, cfg.group_size,
                                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                top_p=cfg.top_p, seed=seed, weights=self.weights,
                                generation_batch_size=cfg.generation_chunk_size)

    def rollout(self, step: int) -> tuple[Rollout, int]:
        """(the groups to train on, timed with every round's seconds; how many groups sampled had no signal):
        `sample_step` for callers that time a step's phases apart (tools/bench_grpo.py)."""
        sample = self.sample_step(step)
        sampled = sample.sampled
        kept = Rollout(sample.kept.completions, sample.kept.group_size, sampled.seconds_generate,
                       sampled.seconds_reward)
        return kept, zero_signal_groups(sample)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """The step's learning rate, then mu policy-gradient steps on one rollout batch, in micro-batches;
        returns the update's metrics (`learning_rate` among them)."""
        return self.learner.update(rollout, self.step)

    def finish_step(self, sample: StepSample) -> dict[str, float]:
        """The update on `sample`'s kept groups; advances `step` and returns the step's metrics."""
        cfg = self.config
        update = self.update(sample.kept)
        self.step += 1
        self.state.global_step = self.step
        train_size = self.task.size("train")
        epoch = {"epoch": self.step * cfg.prompts_per_step / train_size} if train_size else {}
        self.state.epoch = epoch.get("epoch", 0.0)
        learning_rate = update.pop("learning_rate", getattr(self.optimizer, "lr", None))
        return {"step": self.step, "learning_rate": learning_rate,
                **sampling_metrics(sample, kept_too=cfg.dynamic_sampling, ddof=int(cfg.advantage_std == "bessel")),
                **update, **epoch}

    def train_step(self) -> dict[str, float]:
        """Sample, score and update once; returns the step's metrics."""
        return self.finish_step(self.sample_step(self.step))

    # ------------------------------------------------------------------ the loop

    def evaluate(self) -> dict[str, float]:
        cfg = self.config
        result = evaluate(self.model, self.tokenizer, self.task, problems=cfg.eval_problems,
                          max_new_tokens=cfg.max_new_tokens, batch_size=cfg.per_device_eval_batch_size,
                          weights=self.weights)
        return result.as_metrics()

    def state_for_save(self) -> dict:
        """The trainer's entries of a checkpoint's state: the step, the task, the start model, the log history."""
        return {"step": self.step, "task": self.task.name, "start_model": self.start_model,
                "log_history": self.state.log_history}

    def save(self, path: Path) -> Path:
        """Write the training checkpoint `path`; then, with save_total_limit, delete the oldest checkpoint-N
        beyond it (only once the new one is whole); the callbacks hear on_save."""
        saved = self.learner.save(path, self.state_for_save())
        if self.config.save_total_limit:
            prune_checkpoints(self.output, self.config.save_total_limit, keep=saved)
        self.control.should_save = False
        self.event("on_save", checkpoint=str(saved))
        return saved

    def event(self, name: str, **kwargs) -> None:
        """Tell the callbacks `name` with what transformers' Trainer passes (model, processing_class, optimizer,
        ...); a callback may replace the control."""
        self.control = self.callbacks.call(name, self.args, self.state, self.control, model=self.model,
                                           processing_class=self.tokenizer, optimizer=self.optimizer,
                                           lr_scheduler=None, train_dataloader=None, eval_dataloader=None, **kwargs)

    def _epochs_done(self, steps: int) -> int | None:
        """Whole passes over the training problems after `steps` steps; None for an endless generated task."""
        size = self.task.size("train")
        return steps * self.config.prompts_per_step // size if size else None

    def run(self) -> list[dict]:
        """Train from `self.step` to `config.steps`; returns the evaluation records (first and last included).

        Stopped by SIGINT or SIGTERM: saves `output_dir/checkpoint-N`, prints how to resume and raises
        SystemExit(128 + the signal's number). Stopped by a callback (`control.should_training_stop`): saves
        `output_dir/checkpoint-N` and returns."""
        history: list[dict] = []
        first_row = 0 if self.step == 0 else self.step + 1  # rows from there on are this run's to write
        run_log = RunLog(self.output, self.config, first_row=first_row, state=self.state, event=self.event,
                         reported_config=_reported(self.args), logging_dir=getattr(self.args, "logging_dir", "") or "")
        self.event("on_train_begin")
        with run_log, StopOnSignal() as stop:
            progress = Progress(self.config.steps, "grpo", start=self.step, every=1)
            try:
                saved = self._loop(run_log, stop, progress, history)
            finally:
                progress.close()
            stopped = stop.requested or self.control.should_training_stop
            if stopped and (saved is None or saved[0] != self.step):
                saved = (self.step, self.save(self.output / f"checkpoint-{self.step}"))
            self._plot()
            if stop.requested:
                self._report_stop(stop.signal_name, saved[1])
            elif self.control.should_training_stop and self.step < self.config.steps:
                print(f"wgrpo: a callback stopped the run after step {self.step} of {self.config.steps}; saved "
                      f"{saved[1]}", file=sys.stderr)
        self.event("on_train_end")
        if stop.requested:
            raise SystemExit(stop.exit_code)
        return history

    def _loop(self, log: RunLog, stop: StopOnSignal, progress: Progress,
              history: list[dict]) -> tuple[int, Path] | None:
        """The steps until the last or a stop; returns (step, path) of the last checkpoint written, if any. Per
        step, in transformers' order: on_step_end, the training logs, the evaluation, the checkpoint."""
        cfg = self.config
        saved = None
        if self.step == 0:
            evaluation = self._evaluate(stop, log) if cfg.eval_on_start else {}
            record = {"step": 0, **evaluation, **self.memory_estimate.as_metrics()}
            if evaluation:
                history.append(record)
            log.write(record)
        first = self.step
        while self.step < cfg.steps and not stop.requested and not self.control.should_training_stop:
            self.learner.reset_peak()
            if self.step == first or self._epochs_done(self.step) != self._epochs_done(self.step - 1):
                self.event("on_epoch_begin")
            self.event("on_step_begin")
            try:
                with stop.abandonable():  # sampling changes no state: a second signal may drop it
                    sample = self.sample_step(self.step)
            except StopNow:
                break
            metrics = self.finish_step(sample)
            metrics.update(self.learner.peak_metrics())  # memory/peak/total and per kind, measured
            self.event("on_step_end")
            done = self.step == cfg.steps
            report = (done or self.step % cfg.logging_steps == 0 or self.control.should_log
                      or self.control.should_training_stop)
            self.control.should_log = False
            log.train(metrics, self._completions(sample) if report else [], report=report)
            due = done or bool(cfg.eval_every and self.step % cfg.eval_every == 0)
            evaluating = self.evaluates and (due or self.control.should_evaluate)
            self.control.should_evaluate = False
            if evaluating:
                evaluation = self._evaluate(stop, log)
                metrics.update(evaluation)
                if evaluation:
                    history.append({k: v for k, v in metrics.items() if k == "step" or k.startswith("eval_")})
            log.write(metrics)
            progress.update(self.step, reward=metrics["reward"], len=metrics["completions/mean_length"],
                            kl=metrics.get("kl", 0.0))
            if done or (cfg.save_every and self.step % cfg.save_every == 0) or self.control.should_save:
                saved = (self.step, self.save(self.output / ("final" if done else f"checkpoint-{self.step}")))
            if self._epochs_done(self.step) != self._epochs_done(self.step - 1):
                self.event("on_epoch_end")
            if evaluating and not done:
                self._plot()
        return saved

    def _completions(self, sample: StepSample) -> list[dict]:
        """The step's rows for --log-completions."""
        cfg = self.config
        if not cfg.log_completions:
            return []
        return completion_table(self.step, sample.kept, self.tokenizer, cfg.scale_rewards, cfg.advantage_std)

    def _evaluate(self, stop: StopOnSignal, log: RunLog) -> dict[str, float]:
        """The evaluation's metrics, reported; {} when a second signal abandons it or there is nothing held out."""
        if not self.evaluates:
            return {}
        try:
            with stop.abandonable():
                metrics = self.evaluate()
        except StopNow:
            return {}
        log.evaluation(self.step, metrics)
        return metrics

    def _report_stop(self, by: str, checkpoint: Path) -> None:
        if self.step >= self.config.steps:
            print(f"wgrpo: stopped by {by} after the last step; the run is complete: {checkpoint}",
                  file=sys.stderr)
        else:
            print(f"wgrpo: stopped by {by} after step {self.step} of {self.config.steps}; "
                  f"saved {checkpoint}", file=sys.stderr)
            print(f"wgrpo: resume with: {self.resume_hint(checkpoint)}", file=sys.stderr)

    def _plot(self) -> None:
        from wgrpo.rl.train.plot import plot_training

        plot_training(self.output / METRICS_FILE, self.output / "curves.png")

    @classmethod
    def resume_from(cls, config: TrainConfig, checkpoint: str, device=None, reference=None,
                    task=None, **options) -> "GRPOLoop":
        """The trainer as it was when `checkpoint` was written (the task built from `config` unless given).
        `reference` is the frozen reference model, or the directory of the checkpoint to load it from.

        Its trainer files and tokenizer are checked before any weights load; a missing or corrupt one, or an
        optimizer state that does not fit the model, is an InputError naming the file."""
        from wgrpo.engine import load_pretrained, merge_and_unload

        recover(Path(checkpoint).parent)  # a kill while replacing it may have left it aside
        state, optimizer_state, _ = load_training_state(checkpoint)  # checked before the weights load
        if isinstance(reference, (str, os.PathLike)):  # frozen in the dtype the run loaded its start in
            # a run that started from an adapter trained, and was measured against, the merged model
            reference = merge_and_unload(load_pretrained(reference, device, config.dtype)[0])
        # a LoRA checkpoint is a PEFT adapter directory: its base loads in the run's dtype, the adapter on it
        model, tokenizer = load_pretrained(checkpoint, device, config.dtype if config.use_peft else "auto")
        task = task if task is not None else task_of(config)
        trainer = cls(config, model, tokenizer, task, reference, start_step=state["step"],
                      start_model=state.get("start_model", ""), log_history=state.get("log_history", ()), **options)
        trainer.learner.load_optimizer(optimizer_state, checkpoint)
        return trainer


def _reported(args) -> dict:
    """The run's arguments as the reporters record them (wandb's config)."""
    import dataclasses

    if dataclasses.is_dataclass(args):
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}
    return {}


def hash_seed(*values: int) -> int:
    """A 31-bit seed from several integers (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0] & 0x7FFFFFFF)
