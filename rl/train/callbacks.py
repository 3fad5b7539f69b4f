"""transformers' trainer callbacks, without transformers: `TrainerState`, `TrainerControl`, `TrainerCallback`
and the `CallbackHandler` a trainer calls its events through.

Owns: the callback protocol only; the trainer decides when each event happens and what it passes. Callbacks are
duck-typed: any object with `on_*` methods works, so a `transformers.TrainerCallback` subclass written for
transformers' or TRL's trainers runs here unchanged. Pure Python; imports nothing of the engine.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgrpo.rl.errors import input_error

__all__ = ["EVENTS", "CallbackHandler", "TrainerCallback", "TrainerControl", "TrainerState"]

# transformers' events, in the order a training run meets them
EVENTS = ("on_init_end", "on_train_begin", "on_epoch_begin", "on_step_begin", "on_pre_optimizer_step",
          "on_optimizer_step", "on_substep_end", "on_step_end", "on_log", "on_evaluate", "on_predict",
          "on_prediction_step", "on_save", "on_push_begin", "on_epoch_end", "on_train_end")


@dataclass
class TrainerState:
    """Where training is, as transformers' `TrainerState` holds it (checkpoints keep it in trainer_state.json)."""
    epoch: float | None = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    log_history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True

    def save_to_json(self, json_path: str | Path) -> None:
        """Write the state to `json_path` as transformers does (indented, keys sorted)."""
        text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
        Path(json_path).write_text(text, encoding="utf-8")

    @classmethod
    def load_from_json(cls, json_path: str | Path) -> TrainerState:
        """The state saved in `json_path`. Keys this class does not hold (a transformers trainer_state.json has
        more) are left out."""
        path = Path(json_path)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise input_error(f"{path}: not a readable trainer state ({e}); give the trainer_state.json of a "
                              f"checkpoint") from None
        if not isinstance(saved, dict):
            raise input_error(f"{path}: a trainer state is a JSON object, got {type(saved).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})


@dataclass
class TrainerControl:
    """What the callbacks ask of the training loop; the trainer acts on the flags and resets them."""
    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self) -> None:
        self.should_training_stop = False

    def _new_epoch(self) -> None:
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False


class TrainerCallback:
    """Does nothing at each event; subclass it and override the events you need. Each gets the trainer's
    arguments, state and control, and keyword arguments that depend on the event (`logs` for on_log, `metrics`
    for on_evaluate, `model`...). An event may return a control object, which replaces the trainer's."""

    def on_init_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the end of the trainer's initialisation."""

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the beginning of training."""

    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the end of training."""

    def on_epoch_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the beginning of an epoch."""

    def on_epoch_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the end of an epoch."""

    def on_step_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the beginning of a training step."""

    def on_pre_optimizer_step(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """Before the optimizer step, after gradient clipping."""

    def on_optimizer_step(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After the optimizer step, before the gradients are zeroed."""

    def on_substep_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the end of a gradient-accumulation substep."""

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the end of a training step."""

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After an evaluation."""

    def on_predict(self, args, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        """After a prediction."""

    def on_save(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After a checkpoint is saved."""

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        """After the metrics of a step are logged."""

    def on_prediction_step(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After a prediction step."""

    def on_push_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """Before a push to the Hub."""


def _describe(callback) -> str:
    return callback.__name__ if isinstance(callback, type) else f"{type(callback).__name__} object {callback!r}"


def _has_events(callback) -> bool:
    return any(name.startswith("on_") and callable(getattr(callback, name, None)) for name in dir(callback))


class CallbackHandler:
    """The trainer's callbacks, called in the order they were added."""

    def __init__(self, callbacks: Iterable = ()):
        self.callbacks: list = []
        for callback in callbacks:
            self.add_callback(callback)

    @property
    def callback_list(self) -> str:
        return "\n".join(type(callback).__name__ for callback in self.callbacks)

    def add_callback(self, callback) -> None:
        """Add `callback`: a class (instantiated with no arguments) or an object with `on_*` methods."""
        if isinstance(callback, type):
            if not _has_events(callback):
                raise input_error(f"callback {_describe(callback)} has no on_* method (on_log, on_step_end...); "
                                  f"give a TrainerCallback subclass or an object with on_* methods")
            try:
                instance = callback()
            except TypeError as e:
                raise input_error(f"callback {_describe(callback)} cannot be created without arguments ({e}); "
                                  f"give an instance instead") from None
        elif _has_events(callback):
            instance = callback
        else:
            raise input_error(f"callback {_describe(callback)} is neither a class nor has any on_* method "
                              f"(on_log, on_step_end...); give a TrainerCallback subclass or an instance of one")
        if type(instance) in {type(existing) for existing in self.callbacks}:
            warnings.warn(f"adding a {type(instance).__name__} to the callbacks, but there is already one. The "
                          f"current list of callbacks is:\n{self.callback_list}", stacklevel=2)
        self.callbacks.append(instance)

    def pop_callback(self, callback):
        """Remove and return the first callback that is an instance of class `callback`, or `callback` itself;
        None if there is none."""
        for existing in self.callbacks:
            if isinstance(existing, callback) if isinstance(callback, type) else existing is callback:
                self.callbacks.remove(existing)
                return existing
        return None

    def remove_callback(self, callback) -> None:
        """Remove what `pop_callback` would return (nothing if there is none)."""
        self.pop_callback(callback)

    def call(self, event: str, args, state: TrainerState, control: TrainerControl, **kwargs) -> TrainerControl:
        """Call `event` on every callback that has it, and return the control: a callback's method that returns
        a control object replaces it for the callbacks after it and for the trainer. As in transformers,
        on_train_begin, on_epoch_begin and on_step_begin first reset the flags of a new training, epoch, step."""
        if event not in EVENTS:
            raise ValueError(f"unknown callback event {event!r}; the events are {', '.join(EVENTS)}")
        if event == "on_train_begin":
            control._new_training()
        elif event == "on_epoch_begin":
            control._new_epoch()
        elif event == "on_step_begin":
            control._new_step()
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if not callable(method):
                continue
            result = method(args, state, control, **kwargs)
            if result is not None and hasattr(result, "should_training_stop"):  # transformers' own will do
                control = result
        return control
