"""What the trainer samples: whole epochs of a finite task, with and without dynamic sampling, and metrics over
every group sampled as well as over the groups kept."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.rollout import Completion, Rollout
from wgrpo.rl.tasks.base import Problem, render_prompt
from wgrpo.rl.train.step_metrics import StepSample, sampling_metrics
from wgrpo.rl.train.trainer import GRPOLoop
from tests.rl.train.test_trainer import CountSevens, config, tiny_setup


class FiniteSevens(CountSevens):
    """N fixed training problems; the even ones score every completion alike, so their groups carry no signal."""

    name = "sevens"

    def __init__(self, n: int):
        super().__init__(template="plain")
        self.n = n

    def size(self, split: str = "train"):
        return self.n if split == "train" else None

    def _sample_index(self, index: int, split: str) -> Problem:
        if split == "train" and not 0 <= index < self.n:
            raise AssertionError(f"train index {index} outside the task's {self.n} problems")
        question = f"Say sevens after {index}."
        return Problem(task=self.name, id=f"{split}{index}", split=split, question=question,
                       prompt=render_prompt(question, think_prefix=True, template="plain"), answer="7",
                       think_in_prompt=True, meta={"index": index})

    def _prompts_to_check(self):
        return [(f"problem {i}", self.sample(i).prompt) for i in range(self.n)]

    def reward_parts(self, completion, problem):
        if problem.meta["index"] % 2 == 0:
            return {"accuracy": 0.5, "format": 0.0}
        return super().reward_parts(completion, problem)


@pytest.mark.parametrize("dynamic", [False, True], ids=["plain", "dynamic_sampling"])
def test_an_epoch_of_steps_visits_every_problem_once(device, tmp_path, dynamic):
    n, batch = 12, 4
    model, tokenizer, _ = tiny_setup(device)
    trainer = GRPOLoop(config(tmp_path, prompts_per_step=batch, group_size=2, max_new_tokens=4, beta=0.0,
                                 dynamic_sampling=dynamic, max_sampling_rounds=3), model, tokenizer,
                          FiniteSevens(n))
    samples = [trainer.sample_step(step) for step in range(n // batch)]
    main_stream = [i for sample in samples for i in sample.problem_indices[0]]
    assert sorted(main_stream) == list(range(n))
    extra = [i for sample in samples for indices in sample.problem_indices[1:] for i in indices]
    if dynamic:  # the even problems' groups are dropped, so every step resamples, from its own stream
        assert extra and all(0 <= i < n for i in extra)
        assert all(len(s.kept.completions) == batch * 2 for s in samples if len(s.rounds) < 3)
    else:
        assert not extra and all(len(s.kept.completions) == batch * 2 for s in samples)
    second_epoch = [i for step in range(n // batch, 2 * n // batch) for i in trainer.problem_indices(step, 0)]
    assert sorted(second_epoch) == list(range(n)) and second_epoch != main_stream


def test_a_task_without_training_problems_is_refused(device, tmp_path):
    model, tokenizer, _ = tiny_setup(device)
    with pytest.raises(InputError, match="task 'sevens' has no training problems"):
        GRPOLoop(config(tmp_path, beta=0.0), model, tokenizer, FiniteSevens(0))


def test_a_task_without_held_out_problems_cannot_be_evaluated(device):
    from wgrpo.rl.train.evaluate import evaluate

    class NoEval(FiniteSevens):
        def size(self, split="train"):
            return self.n if split == "train" else 0

    model, tokenizer, _ = tiny_setup(device)
    with pytest.raises(InputError, match="task 'sevens' has no held-out problems"):
        evaluate(model, tokenizer, NoEval(4), problems=4)


def completion(reward: float, tokens: int, finish: str = "stop") -> Completion:
    return Completion(0, [1, 2], list(range(tokens)), np.full(tokens, -0.5, np.float32), "x", finish,
                      {"accuracy": reward, "format": 1.0}, reward)


def test_metrics_cover_every_group_sampled_and_the_kept_ones_apart():
    # round 0: group A is uniform (dropped), B is kept; round 1: C is uniform (dropped), D is kept
    a = [completion(1.0, 2), completion(1.0, 4)]
    b = [completion(0.0, 6, "length"), completion(0.5, 2)]
    c = [completion(0.0, 2), completion(0.0, 2)]
    d = [completion(1.0, 4), completion(0.5, 8, "length")]
    sample = StepSample(problem_indices=[[0, 1], [5, 6]], rounds=[Rollout(a + b, 2, 1.0, 0.5),
                                                                  Rollout(c + d, 2, 3.0, 0.5)],
                        kept=Rollout(b + d, 2, 0.0, 0.0))
    metrics = sampling_metrics(sample, kept_too=True)
    # all 8 rewards: 1 1 0 .5 0 0 1 .5 -> mean 0.5, population std sqrt(6 * 0.25 / 8); within the groups A B C D
    # the spreads are 0 .25 0 .25, so TRL's reward_std (their mean) is 0.125
    assert metrics["reward"] == pytest.approx(0.5) and metrics["rewards/accuracy/mean"] == pytest.approx(0.5)
    assert metrics["reward_std"] == pytest.approx(0.125)
    assert metrics["rewards/accuracy/std"] == pytest.approx(np.sqrt(1.5 / 8))
    assert metrics["completions/mean_length"] == pytest.approx(30 / 8)
    assert (metrics["completions/min_length"], metrics["completions/max_length"]) == (2, 8)
    assert metrics["completions/clipped_ratio"] == pytest.approx(2 / 8)
    assert metrics["completions/mean_terminated_length"] == pytest.approx(16 / 6)
    # kept: 0 .5 1 .5 -> mean 0.5, within-group spreads .25 .25; lengths 6 2 4 8
    assert metrics["kept/reward"] == pytest.approx(0.5) and metrics["kept/rewards/accuracy/mean"] == pytest.approx(0.5)
    assert metrics["kept/reward_std"] == pytest.approx(0.25)
    assert metrics["kept/completions/mean_length"] == pytest.approx(5.0)
    assert metrics["kept/completions/clipped_ratio"] == pytest.approx(0.5)
    assert metrics["rewards/format/mean"] == metrics["kept/rewards/format/mean"] == 1.0
    assert metrics["rewards/format/std"] == 0.0
    assert metrics["frac_reward_zero_std"] == pytest.approx(2 / 4)  # A and C, of the 4 groups sampled
    assert (metrics["sampling/rounds"], metrics["sampling/groups"], metrics["sampling/groups_kept"]) == (2, 4, 2)
    assert metrics["time/rollout"] == 4.0 and metrics["rollout_tokens_per_s"] == pytest.approx(30 / 4.0)
    assert metrics["entropy"] == pytest.approx(0.5)
    assert not any(k.startswith("kept/") for k in sampling_metrics(sample, kept_too=False))
