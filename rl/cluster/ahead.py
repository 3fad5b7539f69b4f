"""The batch an asynchronous run sampled ahead, written into its checkpoints so that a resume trains on it as the
uninterrupted run would (the weights that sampled it are gone by then).

Owns `to_record` / `from_record`: a `rl.train.step_metrics.StepSample` as JSON-ready data and back, exactly
(float32 log-probs and float64 rewards survive the round trip through JSON's shortest decimal form), with the
metrics its sampling logged. Pure Python and numpy.
"""

from __future__ import annotations

import numpy as np

from wgrpo.rl.rollout import Completion, Rollout
from wgrpo.rl.train.step_metrics import StepSample

FORMAT = 1


def _completion(c: Completion) -> dict:
    return {"problem_index": c.problem_index, "prompt_ids": [int(t) for t in c.prompt_ids],
            "token_ids": [int(t) for t in c.token_ids], "logprobs": [float(v) for v in c.logprobs],
            "text": c.text, "finish_reason": c.finish_reason, "parts": {k: float(v) for k, v in c.parts.items()},
            "reward": float(c.reward)}


def _rollout(r: Rollout) -> dict:
    return {"group_size": r.group_size, "seconds_generate": r.seconds_generate, "seconds_reward": r.seconds_reward,
            "completions": [_completion(c) for c in r.completions]}


def to_record(step: int, sample: StepSample, metrics: dict[str, float]) -> dict:
    """What a checkpoint keeps of the batch sampled ahead for `step` (the next step to train)."""
    return {"format": FORMAT, "step": step, "problem_indices": sample.problem_indices,
            "rounds": [_rollout(r) for r in sample.rounds], "kept": _rollout(sample.kept), "metrics": metrics}


def _completion_of(d: dict) -> Completion:
    return Completion(d["problem_index"], list(d["prompt_ids"]), list(d["token_ids"]),
                      np.asarray(d["logprobs"], np.float32), d["text"], d["finish_reason"], dict(d["parts"]),
                      d["reward"])


def _rollout_of(d: dict) -> Rollout:
    return Rollout([_completion_of(c) for c in d["completions"]], d["group_size"], d["seconds_generate"],
                   d["seconds_reward"])


def from_record(record: dict) -> tuple[int, StepSample, dict[str, float]]:
    """(step, StepSample, metrics) of `to_record`'s output."""
    if record.get("format") != FORMAT:
        raise ValueError(f"sampled_ahead: format {record.get('format')!r}, expected {FORMAT}")
    sample = StepSample([list(i) for i in record["problem_indices"]], [_rollout_of(r) for r in record["rounds"]],
                        _rollout_of(record["kept"]))
    return int(record["step"]), sample, dict(record["metrics"])
