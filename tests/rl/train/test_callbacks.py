"""wgrpo.rl.train.callbacks: transformers' callback protocol; events reach duck-typed, subclassed and
transformers' own callbacks, a returned control replaces the trainer's, the state round-trips through JSON."""

from __future__ import annotations

import json

import pytest

from wgrpo.engine import InputError
from wgrpo.rl.train.callbacks import EVENTS, CallbackHandler, TrainerCallback, TrainerControl, TrainerState


class Recorder(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(("on_log", state.global_step, dict(logs)))

    def on_save(self, args, state, control, **kwargs):
        self.seen.append(("on_save", state.global_step, kwargs["checkpoint"]))


class DuckTyped:  # no base class: only the events it has are called
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


class StopAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= 2:
            control.should_training_stop = True


def test_events_reach_subclassed_and_duck_typed_callbacks_in_order():
    recorder, duck = Recorder(), DuckTyped()
    handler = CallbackHandler([recorder, duck, StopAt])  # a class is instantiated
    assert isinstance(handler.callbacks[2], StopAt) and handler.callback_list == "Recorder\nDuckTyped\nStopAt"
    state, control, args = TrainerState(max_steps=5), TrainerControl(), {"lr": 1e-4}
    handler.call("on_train_begin", args, state, control)
    for step in range(1, 6):
        state.global_step = step
        control = handler.call("on_step_begin", args, state, control)
        control = handler.call("on_step_end", args, state, control)
        control = handler.call("on_log", args, state, control, logs={"loss": 1 / step})
        if control.should_training_stop:
            break
    handler.call("on_save", args, state, control, checkpoint="out/checkpoint-2")
    assert duck.steps == [1, 2]
    assert recorder.seen == [("on_log", 1, {"loss": 1.0}), ("on_log", 2, {"loss": 0.5}),
                             ("on_save", 2, "out/checkpoint-2")]
    handler.call("on_train_begin", args, state, control)  # a new training clears the stop
    assert not control.should_training_stop


def test_a_returned_control_replaces_the_trainers_for_later_callbacks_too():
    replacement = TrainerControl(should_save=True)
    received = []

    class Replace:
        def on_evaluate(self, args, state, control, **kwargs):
            return replacement

    class Sees:
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            received.append((control, metrics))
            return True  # not a control: ignored

    original = TrainerControl()
    result = CallbackHandler([Replace(), Sees()]).call("on_evaluate", None, TrainerState(), original,
                                                       metrics={"eval/accuracy": 0.5})
    assert result is replacement and received == [(replacement, {"eval/accuracy": 0.5})]
    assert not original.should_save


def test_step_begin_resets_the_per_step_flags_and_epoch_begin_the_epoch_stop():
    control = TrainerControl(should_save=True, should_evaluate=True, should_log=True, should_epoch_stop=True,
                             should_training_stop=True)
    handler = CallbackHandler()
    handler.call("on_step_begin", None, TrainerState(), control)
    assert (control.should_save, control.should_evaluate, control.should_log) == (False, False, False)
    assert control.should_epoch_stop and control.should_training_stop
    handler.call("on_epoch_begin", None, TrainerState(), control)
    assert not control.should_epoch_stop and control.should_training_stop


def test_the_base_callback_answers_every_event_with_nothing():
    control = TrainerControl()
    for event in EVENTS:
        assert getattr(TrainerCallback(), event)(None, TrainerState(), control) is None
        assert CallbackHandler([TrainerCallback]).call(event, None, TrainerState(), control) is control
    with pytest.raises(ValueError, match="unknown callback event 'on_lgo'"):
        CallbackHandler().call("on_lgo", None, TrainerState(), control)


def test_a_duplicate_class_warns_and_callbacks_pop_by_class_or_instance():
    first, second = Recorder(), Recorder()
    handler = CallbackHandler([first, DuckTyped])
    with pytest.warns(UserWarning, match="adding a Recorder to the callbacks, but there is already one"):
        handler.add_callback(second)
    assert handler.pop_callback(Recorder) is first  # the first of the class
    assert handler.pop_callback(second) is second
    assert handler.pop_callback(second) is None
    handler.remove_callback(DuckTyped)
    assert handler.callbacks == []


@pytest.mark.parametrize("callback, named", [
    (object(), "object object <object object"),
    (42, "int object 42"),
    (print, "builtin_function_or_method object <built-in function print>"),
    (dict, "callback dict has no on_* method"),
])
def test_a_callback_without_events_is_an_input_error_naming_it(callback, named):
    with pytest.raises(InputError) as error:
        CallbackHandler([callback])
    assert named in str(error.value) and "\n" not in str(error.value)


def test_a_class_that_needs_arguments_asks_for_an_instance():
    class NeedsPatience(TrainerCallback):
        def __init__(self, patience):
            self.patience = patience

    with pytest.raises(InputError, match="NeedsPatience cannot be created without arguments.*give an instance"):
        CallbackHandler([NeedsPatience])
    assert CallbackHandler([NeedsPatience(3)]).callbacks[0].patience == 3


def test_state_round_trips_through_json_as_transformers_writes_it(tmp_path):
    state = TrainerState(global_step=7, max_steps=50, epoch=0.5, train_batch_size=64, best_metric=0.75,
                         log_history=[{"step": 5, "loss": 0.25}], best_model_checkpoint="out/checkpoint-5")
    path = tmp_path / "trainer_state.json"
    state.save_to_json(path)
    text = path.read_text()
    assert text.endswith("}\n") and list(json.loads(text)) == sorted(json.loads(text))  # indented, sorted
    assert TrainerState.load_from_json(path) == state
    saved = json.loads(text) | {"total_flos": 12.0, "stateful_callbacks": {}}  # a transformers checkpoint's
    path.write_text(json.dumps(saved))
    assert TrainerState.load_from_json(path) == state
    for bad, message in (("[1, 2]", "a trainer state is a JSON object, got list"), ("{", "not a readable")):
        path.write_text(bad)
        with pytest.raises(InputError, match=message):
            TrainerState.load_from_json(path)


# --- transformers' own callbacks --------------------------------------------------------------------------------

def test_a_transformers_callback_receives_on_log_and_can_stop_training(capsys):
    transformers = pytest.importorskip("transformers")

    class StopOnLowLoss(transformers.TrainerCallback):
        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append((state.global_step, logs))
            if logs["loss"] < 0.3:
                control.should_training_stop = True
            return control

    handler = CallbackHandler([StopOnLowLoss, transformers.trainer_callback.PrinterCallback])
    state, control = TrainerState(), TrainerControl()
    for step, loss in ((1, 0.5), (2, 0.25)):
        state.global_step = step
        control = handler.call("on_log", None, state, control, logs={"loss": loss})
    assert handler.callbacks[0].logs == [(1, {"loss": 0.5}), (2, {"loss": 0.25})]
    assert control.should_training_stop
    printed = capsys.readouterr().out.splitlines()  # by PrinterCallback, each step's logs
    assert len(printed) == 2 and all("'loss'" in line for line in printed)
    assert "0.5" in printed[0] and "0.25" in printed[1]


def test_transformers_state_file_loads_here(tmp_path):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.TrainerState(global_step=3, max_steps=10, log_history=[{"step": 3, "loss": 1.5}])
    theirs.save_to_json(str(tmp_path / "trainer_state.json"))
    ours = TrainerState.load_from_json(tmp_path / "trainer_state.json")
    assert (ours.global_step, ours.max_steps, ours.log_history) == (3, 10, [{"step": 3, "loss": 1.5}])
