"""`GRPOTrainer`, TRL's door: `GRPOTrainer(model=..., reward_funcs=[...], args=GRPOConfig(...),
train_dataset=...)` then `trainer.train()`, as a TRL script writes it.

Owns: turning TRL's arguments into wgrpo's run: the model loaded from its directory or Hub id (in the dtype
`bf16`/`fp16`/`model_init_kwargs` give), the tokenizer from beside it, the datasets (`rl.datasets.load_rows`)
and reward functions (`rl.reward_scoring.RewardFunctions`) made into a `DatasetTask`, the reference model built
inside (none with beta 0; with LoRA the base with the adapters off), `peft_config` (wgrpo's or PEFT's
LoraConfig) made into adapters, and the step loop (`rl.train.trainer.GRPOLoop`) with the callbacks.
`train(resume_from_checkpoint=True)` continues from the newest checkpoint in output_dir, a path from that one.
What TRL has and wgrpo does not (vLLM, reward models, custom optimizers, several optimizer steps per generation
batch, ...) is refused by name: here, or by `GRPOConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from wgrpo.engine import InputError
from wgrpo.rl.train.grpo_config import peft_lora_options
from wgrpo.rl.train.reporting import check_report_to


class TrainOutput(NamedTuple):
    """What `train()` returns, as transformers' TrainOutput."""
    global_step: int
    training_loss: float
    metrics: dict[str, float]


def _reward_functions(reward_funcs, weights):
    from wgrpo.rl.reward_funcs import load_reward_funcs
    from wgrpo.rl.reward_scoring import RewardFunctions

    items = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    functions = []
    for item in items:
        if isinstance(item, str):  # TRL: a reward model's id; here a built-in name or file.py:name
            functions.extend(load_reward_funcs(item))
        elif callable(item):
            functions.append(item)
        else:
            raise InputError(f"reward_funcs: {item!r} is neither a function nor a name; pass functions "
                             f"fn(prompts, completions, completion_ids, **columns) (reward models are not supported)")
    return RewardFunctions(functions, weights)


_MODEL_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                          "adapter_config.json", "adapter_model.safetensors"})


def _save_into(model, tokenizer, directory: Path) -> Path:
    """The model's files written into `directory` beside what it holds (a run's checkpoints and metrics), as
    transformers' save_model does: each file replaced on its own, and model files of the other kind (an adapter's
    beside a full model's) removed, so that the directory loads as what was saved."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=".save-model-", dir=directory))
    try:
        written = scratch / "model"
        model.save_pretrained(written, tokenizer)
        names = {entry.name for entry in written.iterdir()}
        for stale in _MODEL_FILES - names:  # a model file of the other kind; a README or .gitattributes stays
            if (directory / stale).is_file():
                (directory / stale).unlink()
        for shard in directory.glob("model-*-of-*.safetensors"):
            if shard.name not in names:
                shard.unlink()
        for name in sorted(names):
            os.replace(written / name, directory / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


def _trl_option(name: str, value) -> str:
    """A TrainConfig option as GRPOConfig spells it (`learning_rate=0.001`)."""
    from wgrpo.rl.train.grpo_config import CLI_ALIASES

    trl_names = {field_name: trl_name for trl_name, field_name in CLI_ALIASES.items()}
    return f"{trl_names.get(name, name)}={value!r}"


def _resume_hint(checkpoint) -> str:
    return f"the same script with trainer.train(resume_from_checkpoint={str(checkpoint)!r}) (or True: the newest)"


def _model_path(model) -> str:
    from wgrpo.rl.train.pipeline import model_directory

    return model_directory(os.fspath(model))


class GRPOTrainer:
    """TRL's GRPOTrainer on wgrpo (see the module docstring)."""

    def __init__(self, model, reward_funcs, args=None, train_dataset=None, eval_dataset=None, processing_class=None,
                 reward_processing_classes=None, callbacks=None, optimizers=(None, None), peft_config=None):
        from wgrpo.rl.datasets import load_rows
        from wgrpo.rl.train.grpo_config import GRPOConfig

        if train_dataset is None:
            raise InputError("GRPOTrainer: train_dataset is required: a list of dicts with a 'prompt', a JSONL path "
                             "or a datasets.Dataset")
        if reward_processing_classes is not None:
            raise InputError("GRPOTrainer: reward_processing_classes applies to reward models, which wgrpo does "
                             "not run; pass reward functions")
        if tuple(optimizers) != (None, None):
            raise InputError("GRPOTrainer: optimizers must be (None, None); wgrpo's AdamW runs on the device "
                             "(set learning_rate, adam_beta1/2, weight_decay and lr_scheduler_type in GRPOConfig)")
        if isinstance(eval_dataset, dict):
            raise InputError("GRPOTrainer: eval_dataset as a dict of datasets is not supported; pass one dataset")
        if not isinstance(model, (str, os.PathLike)):
            raise InputError(f"GRPOTrainer: model must be a checkpoint directory or a Hub id, got "
                             f"{type(model).__name__} (wgrpo loads the weights onto its own device itself)")
        self.model_id = model
        self.args = args if args is not None else GRPOConfig(output_dir=f"{Path(str(self.model_id)).name}-GRPO")
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        # reward_weights checked against the functions here, in TRL's words; the run takes them from the TrainConfig
        self.reward_funcs = _reward_functions(reward_funcs, self.args.reward_weights)
        if self.args.evaluates_during_training and eval_dataset is None:
            raise InputError(f"GRPOConfig: eval_strategy {self.args.eval_strategy!r} needs an eval_dataset; give "
                             f"GRPOTrainer(eval_dataset=...) or eval_strategy='no'")
        self.peft_config = peft_config
        rows = load_rows(train_dataset, "train_dataset")
        self._eval_rows = load_rows(eval_dataset, "eval_dataset") if eval_dataset is not None else None
        self.config = self._train_config(len(rows))
        check_report_to(self.config.report_to)  # a missing integration is named before the model loads
        self.task = self._task(rows)
        self._callbacks = list(callbacks or [])
        self._processing_class = processing_class
        self.loop = self._start()
        self.loop.event("on_init_end")

    # ------------------------------------------------------------------ building the run

    def _train_config(self, train_size: int):
        lora = peft_lora_options(self.peft_config) if self.peft_config is not None else None
        config = self.args.to_train_config(model=os.fspath(self.model_id), train_size=train_size,
                                           use_peft=lora is not None, lora=lora)
        if self._eval_rows is not None and self.args.evaluates_during_training:
            config = dataclasses.replace(config, eval_problems=len(self._eval_rows))
        return config.absolute_paths()

    def _task(self, rows):
        """The rows as a DatasetTask; its held-out rows only when GRPOConfig evaluates during training."""
        from wgrpo.rl.tasks.dataset import DatasetTask

        held_out = self._eval_rows if self.args.evaluates_during_training else None
        return DatasetTask(rows, self.reward_funcs, held_out, source="train_dataset")

    def _tokenizer(self, loaded):
        """The tokenizer: the one beside the model; a transformers tokenizer given as processing_class must be
        the model's own, and its chat template, when set and different, is used (and saved with checkpoints)."""
        given = self._processing_class
        if given is None or given is loaded:
            return loaded
        if hasattr(given, "encode") and hasattr(given, "token_to_id"):  # wgrpo's own tokenizer
            return given
        template = getattr(given, "chat_template", None)
        if isinstance(template, str) and loaded is not None and template != getattr(loaded, "chat_template", None):
            if not hasattr(loaded, "with_chat_template"):
                raise InputError(f"processing_class: its chat template cannot be given to the tokenizer of "
                                 f"{self.model_id} (no tokenizer_config.json); write the template there")
            loaded = loaded.with_chat_template(template)
        return loaded

    def _start(self, checkpoint: str | None = None):
        from wgrpo.engine import is_hub_id, load_pretrained
        from wgrpo.rl.train.pipeline import policy_and_reference
        from wgrpo.rl.train.trainer import GRPOLoop

        config = self.config
        start = _model_path(self.model_id)
        model, tokenizer = load_pretrained(start, None, config.dtype)
        if is_hub_id(os.fspath(self.model_id)):  # what a LoRA adapter names as its base: the Hub id itself
            model.name_or_path = os.fspath(self.model_id).partition("@")[0]
        tokenizer = self._tokenizer(tokenizer)
        if tokenizer is None:
            raise InputError(f"GRPOTrainer: model {self.model_id}: no tokenizer.json next to the model")
        policy, reference = policy_and_reference(model, config)
        del model
        return GRPOLoop(config, policy, tokenizer, self.task, reference, start_model=os.path.abspath(start),
                        callbacks=self._callbacks, args=self.args, resume_hint=_resume_hint)

    # ------------------------------------------------------------------ TRL's methods

    @property
    def model(self):
        return self.loop.model

    @property
    def processing_class(self):
        return self.loop.tokenizer

    @property
    def state(self):
        return self.loop.state

    @property
    def callback_handler(self):
        return self.loop.callbacks

    def add_callback(self, callback) -> None:
        self.loop.callbacks.add_callback(callback)

    def pop_callback(self, callback):
        return self.loop.callbacks.pop_callback(callback)

    def remove_callback(self, callback) -> None:
        self.loop.callbacks.remove_callback(callback)

    def train(self, resume_from_checkpoint: bool | str | os.PathLike | None = None) -> TrainOutput:
        """Train to `max_steps` (or the epochs'); `resume_from_checkpoint=True` continues from the newest
        checkpoint in output_dir (InputError when there is none), a path from that checkpoint. A resumed run
        keeps the options it was trained with; only the steps, output_dir, save/eval/logging cadence and the
        memory options may change."""
        if resume_from_checkpoint:
            self.loop = self._resumed(resume_from_checkpoint)
        started, first = time.perf_counter(), self.loop.step
        self.loop.run()
        return self._output(started, first)

    def _resumed(self, resume_from_checkpoint):
        from wgrpo.rl.train.checkpoint import last_checkpoint
        from wgrpo.rl.train.config import resume_config
        from wgrpo.rl.train.pipeline import resume_start
        from wgrpo.rl.train.trainer import GRPOLoop

        output = Path(self.config.output_dir)
        if resume_from_checkpoint is True:
            checkpoint = last_checkpoint(output)
            if checkpoint is None:
                raise InputError(f"resume_from_checkpoint=True: no checkpoint in output_dir {output} (a "
                                 f"checkpoint-N or final directory with its trainer state)")
        else:
            checkpoint = Path(os.fspath(resume_from_checkpoint))
        wanted = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}
        wanted.pop("resume")
        config, changes = resume_config(checkpoint, wanted, shown=_trl_option,
                                        advice="start a new run (another output_dir, or no resume_from_checkpoint) "
                                               "to change it")
        start = resume_start(config)
        reference = start if config.beta > 0 and not config.use_peft else None
        self.loop = None  # the fresh run's models go before the checkpoint's load
        loop = GRPOLoop.resume_from(config, str(checkpoint), None, reference, task=self.task,
                                    callbacks=self._callbacks, args=self.args, resume_hint=_resume_hint)
        for line in changes:
            print(f"wgrpo: {line}", file=sys.stderr)
        self.config = config
        return loop

    def _output(self, started: float, first_step: int) -> TrainOutput:
        seconds = time.perf_counter() - started
        losses = [row["loss"] for row in self.state.log_history
                  if "loss" in row and row["step"] > first_step and math.isfinite(row["loss"])]
        loss = sum(losses) / len(losses) if losses else float("nan")
        steps = self.loop.step - first_step
        metrics = {"train_runtime": seconds, "train_steps_per_second": steps / max(seconds, 1e-9),
                   "train_loss": loss, "epoch": self.state.epoch}
        return TrainOutput(self.loop.step, loss, metrics)

    def evaluate(self, eval_dataset=None) -> dict[str, float]:
        """Greedy pass@1 and mean rewards on `eval_dataset` (default: the trainer's), with the reward
        functions; the metrics as the run logs them (`eval_reward`, `eval_pass@1`, `eval_rewards/<f>/mean`)."""
        from wgrpo.rl.datasets import load_rows
        from wgrpo.rl.tasks.dataset import DatasetTask
        from wgrpo.rl.train.evaluate import evaluate

        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if dataset is None:
            raise InputError("GRPOTrainer.evaluate: no eval_dataset (give one here or to GRPOTrainer)")
        rows = load_rows(dataset, "eval_dataset")
        task = DatasetTask(rows[:1], self.reward_funcs, rows, source="eval_dataset")
        task.use_tokenizer(self.processing_class)
        result = evaluate(self.model, self.processing_class, task, problems=len(rows),
                          max_new_tokens=self.config.max_new_tokens, batch_size=self.args.per_device_eval_batch_size,
                          weights=self.loop.weights)
        return result.as_metrics()

    def log_metrics(self, split: str, metrics: dict) -> None:
        """transformers' summary print: `***** train metrics *****` then one `name = value` line each."""
        print(f"***** {split} metrics *****")
        width = max((len(key) for key in metrics), default=0)
        for key in sorted(metrics):
            value = metrics[key]
            print(f"  {key:<{width}} = {value:.4g}" if isinstance(value, float) else f"  {key:<{width}} = {value}")

    def save_metrics(self, split: str, metrics: dict, combined: bool = True) -> Path:
        """`output_dir/{split}_results.json`, and with `combined` merged into `output_dir/all_results.json`, as
        transformers writes them."""
        output = Path(self.config.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        path = output / f"{split}_results.json"
        path.write_text(json.dumps(metrics, indent=4, sort_keys=True) + "\n")
        if combined:
            everything = output / "all_results.json"
            merged = json.loads(everything.read_text()) if everything.is_file() else {}
            everything.write_text(json.dumps({**merged, **metrics}, indent=4, sort_keys=True) + "\n")
        return path

    def save_state(self) -> Path:
        """The TrainerState (global step, log_history, ...) as `output_dir/trainer_state.json`."""
        path = Path(self.config.output_dir) / "trainer_state.json"
        self.state.save_to_json(path)
        return path

    def push_to_hub(self, *args, **kwargs):
        raise InputError("GRPOTrainer.push_to_hub: wgrpo does not upload; the model is in output_dir/final (upload "
                         "it with `huggingface-cli upload <repo> <dir>`)")

    def save_model(self, output_dir: str | os.PathLike | None = None) -> Path:
        """The model and its tokenizer in Hugging Face format in `output_dir` (default: args.output_dir); with
        LoRA a PEFT adapter directory."""
        from wgrpo.engine import foreign_entries

        path = Path(output_dir if output_dir is not None else self.config.output_dir)
        if path.is_dir() and foreign_entries(path):  # the run's output_dir, as TRL scripts save: write beside
            return _save_into(self.model, self.processing_class, path)
        self.model.save_pretrained(path, self.processing_class)
        return path

