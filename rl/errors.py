"""`input_error`: the engine's `InputError`, built for rl modules that stay importable without the engine.

Tasks, rewards, the JSONL reader and the sandbox are pure Python; importing `wgrpo.engine` at their import would
load wgpu. So they raise `input_error("...")`, which imports the class only when there is an error to raise.
Callers catch it as `wgrpo.engine.InputError`, the same class.
"""

from __future__ import annotations

__all__ = ["ClusterError", "input_error"]


def input_error(message: str) -> ValueError:
    """A `wgrpo.engine.InputError` with `message` (one line naming the input and what was expected)."""
    from wgrpo.engine import InputError

    return InputError(message)


class ClusterError(RuntimeError):
    """An actor of a run scaled out on Ray was lost for good: the message names it and the checkpoint to resume
    from (`rl.cluster`)."""
