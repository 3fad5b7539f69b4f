"""StopOnSignal with real signals sent to this process, and the resume command line."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal

import pytest

from wgrpo.rl.train.stop import StopNow, StopOnSignal, changed_options, resume_command


def test_a_signal_requests_a_stop_and_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process without the handler
        assert stop.requested and stop.signal_name == "SIGTERM" and stop.exit_code == 143
        os.kill(os.getpid(), signal.SIGINT)  # the first signal decides the exit code
        assert stop.exit_code == 143
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.exit_code == 130


def test_a_second_signal_abandons_only_an_abandonable_section():
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        with stop.abandonable():  # the first signal lets the section finish
            pass
        with pytest.raises(StopNow):
            with stop.abandonable():
                os.kill(os.getpid(), signal.SIGINT)
                raise AssertionError("the second signal did not abandon the section")
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # during an update: deferred ...
        with pytest.raises(StopNow):  # ... until the loop reaches a section it may abandon
            with stop.abandonable():
                raise AssertionError("entered a section after a second signal")


def test_a_signal_the_process_ignores_stays_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopOnSignal() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert not stop.requested
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclasses.dataclass
class Options:
    data: str = ""
    steps: int = 10
    lr: float = 1e-3
    packed: bool = True
    seed: int = 0
    resume: str = ""


def test_resume_command_names_the_checkpoint_and_the_changed_options():
    assert resume_command("wgrpo train", "runs/a b/checkpoint-3") == "wgrpo train --resume 'runs/a b/checkpoint-3'"
    options = changed_options(Options(data="d.jsonl", steps=10, lr=5e-4, packed=False, seed=-1,
                                      resume="old/checkpoint-1"), skip=("resume",))
    assert options == {"data": "d.jsonl", "lr": 5e-4, "packed": False, "seed": -1}
    command = resume_command("wgrpo sft", "out/checkpoint-4", options)
    assert command == "wgrpo sft --resume out/checkpoint-4 --data d.jsonl --lr 0.0005 --no-packed --seed=-1"
    assert shlex.split(command)[2:4] == ["--resume", "out/checkpoint-4"]
