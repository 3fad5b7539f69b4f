"""Rollout on a tiny random model: the whole batch is scored by one `task.rewards` call, completions in order, and
generating in chunks of whole groups (generation_batch_size) gives the completions of one call."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.rl.rollout import sample_and_score
from wgrpo.rl.tasks.base import GeneratedTask

WEIGHTS = {"accuracy": 1.0, "format": 0.1}


class Distinct(GeneratedTask):
    """Rewards that differ between samples of a random model (the share of distinct characters); records every
    batch it is asked to score."""

    name = "distinct"

    def __init__(self):
        super().__init__(template="plain")
        self.batches = []

    def _generate(self, rng):
        n = int(rng.integers(0, 1000))
        return str(n), f"Count past {n}.", str(n), {}

    def _accuracy(self, text, problem):
        return len(set(text)) / (1 + len(text))

    def rewards(self, completions, problems, weights=None):
        self.batches.append((list(completions), list(problems)))
        return super().rewards(completions, problems, weights)


class Ragged(Distinct):
    """Distinct with prompts of several lengths, so each chunk of a rollout is left-padded to its own width."""

    name = "ragged"

    def _generate(self, rng):
        n = int(rng.integers(0, 1000))
        return str(n), f"Count past {n}." + " then more" * (n % 4), str(n), {}


def tiny_model(device, problems):
    """A random 1-layer model with a tokenizer trained on the problems' prompts."""
    from wgrpo.engine import Model, ModelConfig, train_tokenizer

    tokenizer = train_tokenizer([p.prompt + " 1 22 333 <answer>4</answer>" for p in problems] * 5, vocab_size=300)
    eos = tokenizer.token_to_id("<|endoftext|>")
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=64, eos_token_id=eos,
                         pad_token_id=eos)
    return Model.random(config, seed=0, device=device), tokenizer


def test_one_batch_scoring_call_in_completion_order(device):
    task = Distinct()
    problems = [task.sample(i) for i in range(3)]
    model, tokenizer = tiny_model(device, problems)
    rollout = sample_and_score(model, tokenizer, task, problems, 4, max_new_tokens=6, temperature=1.0, top_k=0,
                               top_p=1.0, seed=0, weights=WEIGHTS)
    [(texts, scored)] = task.batches
    assert texts == [c.text for c in rollout.completions]
    assert scored == [problems[i // 4] for i in range(12)]
    assert [c.problem_index for c in rollout.completions] == [i // 4 for i in range(12)]
    for completion in rollout.completions:
        reward, parts = task.reward(completion.text, problems[completion.problem_index], WEIGHTS)
        assert (completion.reward, completion.parts) == (reward, parts)
    assert rollout.rewards().shape == (3, 4) and len(set(rollout.rewards().ravel())) > 1


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_chunked_generation_gives_the_completions_of_one_call(device, temperature):
    # 5 problems x G = 3 sampled 6 at a time: chunks of 2, 2 and 1 prompts, each a generate call whose sequences
    # keep their global indices (the RNG's key). Each chunk's prompts are left-padded to its own width, so logits
    # may differ by float rounding: log-probs agree to a tolerance. Tokens agree exactly, also when sampling at
    # temperature 1 (checked: a flip would need two Gumbel-perturbed logits within rounding of each other, which
    # these few draws of a tiny model never come near). Rewards are still scored in one call over all 15.
    task = Ragged()
    problems = [task.sample(i) for i in (0, 5, 8, 7, 1)]  # prompts of 9, 9, 13, 15 and 11 tokens
    model, tokenizer = tiny_model(device, problems)
    widths = [len(tokenizer.encode(p.prompt).ids) for p in problems]
    assert len(set(widths)) >= 3 and max(widths[:2]) < max(widths)  # the chunks' paddings differ
    kwargs = dict(max_new_tokens=8, temperature=temperature, top_k=0, top_p=1.0, seed=3, weights=WEIGHTS)
    whole = sample_and_score(model, tokenizer, task, problems, 3, **kwargs)
    for size in (6, 3):
        chunked = sample_and_score(model, tokenizer, task, problems, 3, generation_batch_size=size, **kwargs)
        assert [len(texts) for texts, _ in task.batches[-2:]] == [15, 15]  # one scoring call per rollout
        for x, y in zip(whole.completions, chunked.completions, strict=True):
            assert (x.problem_index, x.prompt_ids, x.token_ids, x.text, x.finish_reason, x.reward) == \
                (y.problem_index, y.prompt_ids, y.token_ids, y.text, y.finish_reason, y.reward)
            np.testing.assert_allclose(x.logprobs, y.logprobs, rtol=1e-4, atol=1e-5)
        assert chunked.seconds_generate > 0
    if temperature:
        assert len({tuple(c.token_ids) for c in whole.completions[:3]}) > 1  # a group's samples differ


def test_generation_batch_size_must_hold_whole_groups(device):
    task = Distinct()
    problems = [task.sample(i) for i in range(2)]
    model, tokenizer = tiny_model(device, problems)
    kwargs = dict(max_new_tokens=2, temperature=1.0, top_k=0, top_p=1.0, seed=0, weights=WEIGHTS)
    for bad in (4, -3, True, 3.0):
        with pytest.raises(ValueError, match="generation_batch_size must be 0 .* multiple of group_size 3"):
            sample_and_score(model, tokenizer, task, problems, 3, generation_batch_size=bad, **kwargs)
    assert task.batches == []  # refused before any generation
