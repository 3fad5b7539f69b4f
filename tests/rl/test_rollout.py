"""Rollout on a tiny random model: a batch is scored by one `task.rewards` call, completions in order, and
generating in chunks of whole groups (generation_batch_size) gives the completions and rewards of one call, each
chunk scored in the calling thread, its async reward functions still running while the next chunk generates."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import warnings

import numpy as np
import pytest

from wgrpo.rl.datasets import load_rows
from wgrpo.rl.reward_scoring import RewardFunctions
from wgrpo.rl.rollout import Completion, Rollout, nan_stat, sample_and_score
from wgrpo.rl.tasks import DatasetTask
from wgrpo.rl.tasks.base import GeneratedTask

WEIGHTS = {"accuracy": 1.0, "format": 0.1}


class Distinct(GeneratedTask):
    """Rewards that differ between samples of a random model (the share of distinct characters); records every
    batch it is asked to score."""

    name = "distinct"

    def __init__(self):
        super().__init__(template="plain")
        self.batches = []
        self.calls = []  # (thread, start time, completion_ids) of each rewards call

    def _generate(self, rng):
        n = int(rng.integers(0, 1000))
        return str(n), f"Count past {n}.", str(n), {}

    def _accuracy(self, text, problem):
        return len(set(text)) / (1 + len(text))

    def rewards(self, completions, problems, weights=None, completion_ids=None):
        self.calls.append((threading.current_thread(), time.perf_counter(), completion_ids))
        self.batches.append((list(completions), list(problems)))
        return super().rewards(completions, problems, weights, completion_ids)


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
    [(thread, _, completion_ids)] = task.calls
    assert thread is threading.current_thread()  # one chunk: scored where it was generated
    assert completion_ids == [c.token_ids for c in rollout.completions]
    assert all(type(t) is int for ids in completion_ids for t in ids)
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
    # keep their global indices (the RNG's key) and are left-padded to the whole batch's longest prompt, so every
    # chunk computes what the one call computes: tokens and log-probs agree to the bit. Each chunk is scored by a
    # call of its own, in this thread before the next chunk generates, and the rewards are those of one call over
    # all 15.
    task = Ragged()
    problems = [task.sample(i) for i in (0, 5, 8, 7, 1)]  # prompts of 9, 9, 13, 15 and 11 tokens
    model, tokenizer = tiny_model(device, problems)
    widths = [len(tokenizer.encode(p.prompt).ids) for p in problems]
    assert len(set(widths)) >= 3 and max(widths[:2]) < max(widths)  # the chunks' own longest prompts differ
    kwargs = dict(max_new_tokens=8, temperature=temperature, top_k=0, top_p=1.0, seed=3, weights=WEIGHTS)
    whole = sample_and_score(model, tokenizer, task, problems, 3, **kwargs)
    for size, chunks in ((6, [6, 6, 3]), (3, [3] * 5)):
        task.batches, task.calls = [], []
        started = time.perf_counter()
        chunked = sample_and_score(model, tokenizer, task, problems, 3, generation_batch_size=size, **kwargs)
        assert [len(texts) for texts, _ in task.batches] == chunks  # one scoring call per chunk, in order
        assert [p for _, scored in task.batches for p in scored] == [problems[i // 3] for i in range(15)]
        assert all(thread is threading.current_thread() for thread, _, _ in task.calls)
        # the first chunk was scored before the later chunks generated
        assert task.calls[0][1] < started + chunked.seconds_generate
        for x, y in zip(whole.completions, chunked.completions, strict=True):
            assert (x.problem_index, x.prompt_ids, x.token_ids, x.text, x.finish_reason, x.reward, x.parts) == \
                (y.problem_index, y.prompt_ids, y.token_ids, y.text, y.finish_reason, y.reward, y.parts)
            np.testing.assert_array_equal(x.logprobs, y.logprobs)
        assert chunked.seconds_generate > 0 and chunked.seconds_reward >= 0
    if temperature:
        assert len({tuple(c.token_ids) for c in whole.completions[:3]}) > 1  # a group's samples differ


class Failing(Distinct):
    """Rewards that fail on the first chunk."""

    name = "failing"

    def rewards(self, completions, problems, weights=None, completion_ids=None):
        super().rewards(completions, problems, weights, completion_ids)
        raise ZeroDivisionError("a reward function failed")


def test_a_failing_reward_of_a_chunk_stops_the_rollout(device):
    task = Failing()
    problems = [task.sample(i) for i in range(4)]
    model, tokenizer = tiny_model(device, problems)
    with pytest.raises(ZeroDivisionError, match="a reward function failed"):
        sample_and_score(model, tokenizer, task, problems, 2, max_new_tokens=2, temperature=1.0, top_k=0, top_p=1.0,
                         seed=0, weights=WEIGHTS, generation_batch_size=2)
    assert len(task.batches) == 1  # scored in this thread: nothing generated after the failure

    async def remote(prompts, completions, **kwargs):
        raise ZeroDivisionError("an async reward function failed")

    dataset = text_task([remote])
    problems = [dataset.sample(i) for i in range(4)]
    with pytest.raises(ZeroDivisionError, match="an async reward function failed"):
        sample_and_score(model, tokenizer, dataset, problems, 2, max_new_tokens=2, temperature=1.0, top_k=0,
                         top_p=1.0, seed=0, weights=dataset.default_weights, generation_batch_size=2)
    dataset.reward_functions.close()


class StopsAtA(Distinct):
    """A task whose completions end at the first "a"."""

    name = "stops-at-a"
    stop_strings = ("a",)


class Unstopped(Distinct):
    """Generation stops at the end-of-text token only, as a dataset task's."""

    name = "unstopped"
    stop_strings = ()


def test_the_stop_strings_are_the_tasks_unless_given(device):
    stops, unstopped = StopsAtA(), Unstopped()
    problems = [stops.sample(i) for i in range(2)]
    model, tokenizer = tiny_model(device, problems)
    kwargs = dict(max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0, seed=1, weights=WEIGHTS)
    stopped = sample_and_score(model, tokenizer, stops, problems, 8, **kwargs)
    assert any(c.finish_reason == "stop" for c in stopped.completions)
    assert all(c.text.endswith("a") and "a" not in c.text[:-1]
               for c in stopped.completions if c.finish_reason == "stop")
    for rollout in (sample_and_score(model, tokenizer, unstopped, [unstopped.sample(i) for i in range(2)], 8,
                                     **kwargs),
                    sample_and_score(model, tokenizer, stops, problems, 8, stop=[], **kwargs)):
        assert all(c.finish_reason != "stop" for c in rollout.completions)
        assert any("a" in c.text for c in rollout.completions)
    assert Distinct.stop_strings == ("</answer>",)


def test_part_means_and_stds_leave_out_the_parts_that_do_not_apply():
    def completion(parts):
        return Completion(0, [1], [2], np.zeros(1, np.float32), "x", "eos", parts, 0.0)

    rollout = Rollout([completion({"a": 1.0, "b": np.nan, "c": np.nan}), completion({"a": 0.0, "b": 0.5,
                                                                                     "c": np.nan}),
                       completion({"a": 0.5, "b": np.nan})], 3, 0.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means, stds, bessel = rollout.part_means(), rollout.part_stds(), rollout.part_stds(ddof=1)
    assert list(means) == ["a", "b", "c"] and means["a"] == pytest.approx(0.5) and means["b"] == 0.5
    assert np.isnan(means["c"]) and np.isnan(stds["c"])  # NaN everywhere (or missing): NaN, with no warning
    assert stds["a"] == pytest.approx(np.std([1.0, 0.0, 0.5])) and stds["b"] == 0.0
    assert bessel["a"] == pytest.approx(np.std([1.0, 0.0, 0.5], ddof=1)) and bessel["a"] > stds["a"]
    assert np.isnan(bessel["b"]) and np.isnan(bessel["c"])  # ddof=1, TRL's nanstd: one value has no sample std
    assert nan_stat(np.array([np.nan, 2.0, 4.0]), np.mean) == 3.0 and np.isnan(nan_stat(np.array([np.nan]), np.max))


def test_generation_batch_size_must_hold_whole_groups(device):
    task = Distinct()
    problems = [task.sample(i) for i in range(2)]
    model, tokenizer = tiny_model(device, problems)
    kwargs = dict(max_new_tokens=2, temperature=1.0, top_k=0, top_p=1.0, seed=0, weights=WEIGHTS)
    for bad in (4, -3, True, 3.0):
        with pytest.raises(ValueError, match="generation_batch_size must be 0 .* multiple of group_size 3"):
            sample_and_score(model, tokenizer, task, problems, 3, generation_batch_size=bad, **kwargs)
    assert task.batches == []  # refused before any generation


# ----------------------------------------------------------------------------------------------- reward functions

ROWS = [{"prompt": f"Count past {n}.", "answer": str(n), "k": k} for k, n in enumerate((3, 17, 256, 41))]


def text_task(funcs) -> DatasetTask:
    return DatasetTask(load_rows(ROWS, "train_dataset"), RewardFunctions(funcs))


def distinct(completions) -> list[float]:
    return [len(set(c)) / (1 + len(c)) for c in completions]


class SetsSignals(Distinct):
    """A rule task whose rewards set a signal handler (which only the main thread may), recording their thread."""

    name = "sets-signals"

    def rewards(self, completions, problems, weights=None, completion_ids=None):
        previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, previous)
        return super().rewards(completions, problems, weights, completion_ids)


def test_rewards_that_set_signal_handlers_score_a_chunked_rollout(device):
    threads = []

    def guarded(prompts, completions, **kwargs):  # as math_verify's parse() and signal-based timeouts do
        threads.append(threading.current_thread())
        previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, previous)
        return distinct(completions)

    rule = SetsSignals()
    for task in (text_task([guarded]), rule):
        problems = [task.sample(i) for i in range(4)]
        model, tokenizer = tiny_model(device, problems)
        kwargs = dict(max_new_tokens=6, temperature=1.0, top_k=0, top_p=1.0, seed=2, weights=task.default_weights)
        whole = sample_and_score(model, tokenizer, task, problems, 2, **kwargs)
        chunked = sample_and_score(model, tokenizer, task, problems, 2, generation_batch_size=2, **kwargs)
        assert [(c.reward, c.parts) for c in chunked.completions] == [(c.reward, c.parts) for c in whole.completions]
        assert len({c.reward for c in whole.completions}) > 1
    assert len(threads) == 1 + 4 and all(thread is threading.main_thread() for thread in threads)
    assert [len(texts) for texts, _ in rule.batches] == [8, 2, 2, 2, 2]
    assert all(thread is threading.main_thread() for thread, _, _ in rule.calls)


def test_a_chunks_async_rewards_run_while_the_next_chunk_generates(device):
    # one problem per chunk (G = 2, 2 at a time). The sync function of chunk k sets scored[k]; the async function
    # of chunk k waits for scored[k + 1]: it can only finish if the rollout went on generating and scoring chunk
    # k + 1 without waiting for it. Unchunked, there is no next chunk to wait for.
    scored = [threading.Event() for _ in ROWS]
    sync_threads, loops = [], []

    def counted(prompts, completions, k, **kwargs):
        sync_threads.append(threading.current_thread())
        time.sleep(0.05)  # scoring time in this thread: counted in seconds_reward
        for index in k:
            scored[index].set()
        return distinct(completions)

    async def judge(prompts, completions, k, **kwargs):
        loops.append(asyncio.get_running_loop())
        following = max(k) + 1
        if following < len(ROWS) and not await asyncio.to_thread(scored[following].wait, 10):
            raise TimeoutError(f"chunk {following} was not scored while chunk {following - 1}'s judge ran")
        return [len(c) / 10 for c in completions]

    task = text_task([judge, counted])
    problems = [task.sample(i) for i in range(4)]
    model, tokenizer = tiny_model(device, problems)
    kwargs = dict(max_new_tokens=6, temperature=1.0, top_k=0, top_p=1.0, seed=4, weights=task.default_weights)
    whole = sample_and_score(model, tokenizer, task, problems, 2, **kwargs)
    for event in scored:
        event.clear()
    began = time.perf_counter()
    chunked = sample_and_score(model, tokenizer, task, problems, 2, generation_batch_size=2, **kwargs)
    wall = time.perf_counter() - began
    assert [(c.reward, c.parts) for c in chunked.completions] == [(c.reward, c.parts) for c in whole.completions]
    assert [c.text for c in chunked.completions] == [c.text for c in whole.completions]
    assert len({c.parts["judge"] for c in whole.completions}) > 1
    assert len(sync_threads) == 5 and all(thread is threading.main_thread() for thread in sync_threads)
    assert len(loops) == 5 and all(loop is loops[0] for loop in loops) and not loops[0].is_closed()
    assert chunked.seconds_reward >= 4 * 0.05 and chunked.seconds_generate > 0
    assert chunked.seconds_generate + chunked.seconds_reward <= wall
    task.reward_functions.close()
