"""wgrpo.rl.train.progress: plain lines off a terminal, tqdm's redraws on a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import select
import tty

import pytest

from wgrpo.rl.train.progress import Progress


def test_log_lines_carry_label_step_and_compact_metrics():
    stream = io.StringIO()
    progress = Progress(5, "grpo", stream=stream, every=2)
    for step in range(1, 6):
        progress.update(step, reward=0.123456, lr=1e-5, **{"tok/s": 12345})
    progress.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split("|")[2].split()[0] for line in lines] == ["2/5", "4/5", "5/5"]  # every 2nd step and the last
    for line in lines:
        assert line.startswith("grpo:")
        assert "reward=0.123" in line and "lr=1e-5" in line and "tok/s=12345" in line
        assert line.index("reward=") < line.index("lr=") < line.index("tok/s=")  # the caller's order
    assert progress.done == 5


def test_close_prints_the_last_step_when_its_line_was_skipped():
    stream = io.StringIO()
    progress = Progress(10, "sft", stream=stream, every=5)
    for step in range(1, 8):
        progress.update(step, loss=float(step))
    progress.close()
    progress.close()  # a second close adds nothing
    steps = [line.split("|")[2].split()[0] for line in stream.getvalue().splitlines()]
    assert steps == ["5/10", "7/10"]
    assert "loss=7" in stream.getvalue().splitlines()[-1]


def test_resumed_progress_counts_from_start():
    stream = io.StringIO()
    with Progress(10, "grpo", start=4, stream=stream, every=1) as progress:
        progress.update(5, acc=0.5)
    (line,) = stream.getvalue().splitlines()
    assert "5/10" in line and "acc=0.5" in line


def test_context_manager_closes_on_error():
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress(10, "grpo", stream=stream, every=5) as progress:
            progress.update(3, kl=0.25)
            raise RuntimeError("stop")
    assert "3/10" in stream.getvalue() and "kl=0.25" in stream.getvalue()


def test_default_stream_is_stderr(capsys):
    with Progress(2, "sft", every=1) as progress:
        progress.update(1, loss=2.5)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "sft:" in captured.err and "1/2" in captured.err and "loss=2.5" in captured.err


def test_terminal_redraws_in_place():
    master, replica = pty.openpty()
    tty.setraw(replica)  # no newline translation: the bytes read are the bytes written
    # left at 0 x 0 characters, the size a pty reports until a terminal sets one
    try:
        with os.fdopen(os.dup(replica), "w") as terminal:
            progress = Progress(4, "sft", stream=terminal)
            assert progress.interactive
            for step in range(1, 5):
                progress.update(step, loss=1.234567)
            progress.close()
        chunks = []  # a pty hands over what it holds in pieces: read until nothing is left
        while select.select([master], [], [], 0)[0]:
            chunks.append(os.read(master, 1 << 16))
        output = b"".join(chunks).decode()
    finally:
        os.close(master)
        os.close(replica)
    assert "\r" in output  # tqdm redraws the line
    last = output.rstrip("\n").split("\r")[-1]
    assert last.startswith("sft:") and "4/4" in last and "loss=1.23" in last
    assert output.endswith("\n")
