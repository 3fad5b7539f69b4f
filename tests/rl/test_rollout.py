"""Rollout on a tiny random model: the whole batch is scored by one `task.rewards` call, completions in order."""

from __future__ import annotations

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


def test_one_batch_scoring_call_in_completion_order(device):
    from wgrpo.engine import Model, ModelConfig, train_tokenizer

    task = Distinct()
    problems = [task.sample(i) for i in range(3)]
    tokenizer = train_tokenizer([p.prompt + " 1 22 333 <answer>4</answer>" for p in problems] * 5, vocab_size=300)
    eos = tokenizer.token_to_id("<|endoftext|>")
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=64, eos_token_id=eos,
                         pad_token_id=eos)
    model = Model.random(config, seed=0, device=device)
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
