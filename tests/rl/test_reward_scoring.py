"""RewardFunctions: TRL's calling convention, None as NaN, weights, concurrency, output and signature checks."""

from __future__ import annotations

import asyncio
import threading
import traceback

import numpy as np
import pytest

from wgrpo.engine import InputError
from wgrpo.rl.reward_scoring import RewardFunctions


def constant(value):
    def fn(prompts, completions, **kwargs):
        return [value] * len(completions)
    return fn


def named(name, fn):
    fn.__name__ = name
    return fn


def score(functions: RewardFunctions, n: int = 2, columns=None, **kwargs):
    return functions.score([f"p{i}" for i in range(n)], [f"c{i}" for i in range(n)], [[i] for i in range(n)],
                           columns or {}, **kwargs)


def test_every_argument_reaches_the_functions_by_keyword():
    seen = {}

    def grader(prompts, completions, completion_ids, answer, trainer_state, **kwargs):
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, answer=answer,
                    trainer_state=trainer_state, **kwargs)
        prompts.append("edited")  # a function's edits to its lists reach no other function
        return [float(a == c) for a, c in zip(answer, completions)]

    def other(*, prompts, **kwargs):
        return [float(len(prompts))] * len(prompts)

    functions = RewardFunctions([grader, other])
    state = object()
    scores = functions.score(["p", "p"], ["4", "5"], [[7, 8], [9]], {"answer": ["4", "4"], "level": [1, None]},
                             trainer_state=state)
    assert seen == {"prompts": ["p", "p", "edited"], "completions": ["4", "5"], "completion_ids": [[7, 8], [9]],
                    "answer": ["4", "4"], "trainer_state": state, "level": [1, None]}
    assert scores.names == ("grader", "other")
    np.testing.assert_array_equal(scores.per_function, [[1.0, 2.0], [0.0, 2.0]])
    np.testing.assert_array_equal(scores.total, [3.0, 2.0])
    assert scores.per_function.dtype == np.float64


def test_none_is_nan_left_out_of_the_sum_and_all_none_is_zero_with_a_warning():
    half = named("half", lambda prompts, completions, **kw: [None, 0.5, None])
    maybe = named("maybe", lambda prompts, completions, **kw: np.array([1.0, np.nan, None], dtype=object))
    functions = RewardFunctions([half, maybe], weights=[2.0, 1.0])
    with pytest.warns(RuntimeWarning, match=r"every reward function returned None for 1 of 3 completions \(the "
                                            r"first: completion 2\); their reward is 0"):
        scores = score(functions, 3)
    assert np.isnan(scores.per_function[0, 0]) and np.isnan(scores.per_function[2]).all()
    np.testing.assert_array_equal(scores.total, [1.0, 1.0, 0.0])
    assert np.nanmean(scores.per_function, axis=0).tolist() == [0.5, 1.0]


def test_weights_one_per_function():
    functions = RewardFunctions([named("a", constant(1.0)), named("b", constant(0.5))], weights=[0.25, 2])
    assert functions.weights == {"a": 0.25, "b": 2.0} and functions.names == ("a", "b")
    np.testing.assert_array_equal(score(functions).total, [1.25, 1.25])
    assert RewardFunctions([named("a", constant(1.0))]).weights == {"a": 1.0}
    # weights by name, as a task gets them: a name left out counts 0, an unknown name is refused
    np.testing.assert_array_equal(score(functions, weights={"b": 4.0}).total, [2.0, 2.0])
    with pytest.raises(InputError, match="reward weight 'c' names no reward function; the functions: a, b"):
        score(functions, weights={"c": 1.0})
    for bad, got in (([1.0], "1"), ([1, 2, 3], "3"), (1.0, "float"), ({"a": 1.0}, "dict")):
        with pytest.raises(InputError, match=rf"^reward_weights: got {got} for 2 reward functions \(a, b\); give one "
                                             rf"number per function"):
            RewardFunctions(functions.funcs, weights=bad)
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(InputError, match="reward_weights: the weight of b must be a finite number"):
            RewardFunctions(functions.funcs, weights=[1.0, bad])


def test_functions_are_callable_and_named_once():
    with pytest.raises(InputError, match="^reward function 1 is a str"):
        RewardFunctions([constant(1.0), "accuracy"])
    with pytest.raises(InputError, match="^two reward functions are named 'fn'"):
        RewardFunctions([constant(1.0), constant(0.0)])
    with pytest.raises(InputError, match="none given"):
        RewardFunctions([])
    assert RewardFunctions(constant(1.0)).names == ("fn",)  # one function alone, as TRL accepts


def test_slow_functions_run_at_once_in_different_threads():
    barrier = threading.Barrier(3, timeout=10)  # a function that runs alone waits here in vain
    threads = []

    def waiting(prompts, completions, **kwargs):
        threads.append(threading.current_thread())
        barrier.wait()
        return [1.0] * len(completions)

    funcs = [named(name, (lambda fn: lambda prompts, completions, **kw: fn(prompts, completions, **kw))(waiting))
             for name in "abc"]
    scores = score(RewardFunctions(funcs))
    np.testing.assert_array_equal(scores.total, [3.0, 3.0])
    assert len(set(threads)) == 3 and threading.current_thread() in threads  # one ran in the calling thread


def test_async_functions_are_awaited_together_in_one_loop_off_the_calling_thread():
    loops, threads = [], []
    events: dict[str, asyncio.Event] = {}

    def make(name, other):
        async def fn(prompts, completions, **kwargs):
            loops.append(asyncio.get_running_loop())
            threads.append(threading.current_thread())
            events.setdefault(name, asyncio.Event()).set()
            await asyncio.wait_for(events.setdefault(other, asyncio.Event()).wait(), 10)  # needs the other running
            return [0.5] * len(completions)
        return named(name, fn)

    class Judge:
        async def __call__(self, prompts, completions, **kwargs):
            threads.append(threading.current_thread())
            return [0.25] * len(completions)

    scores = score(RewardFunctions([make("first", "second"), constant(1.0), make("second", "first"), Judge()]))
    np.testing.assert_array_equal(scores.per_function[0], [0.5, 1.0, 0.5, 0.25])
    assert len(loops) == 2 and loops[0] is loops[1]
    assert threading.current_thread() not in threads and len(set(threads)) == 1


def test_an_exception_in_a_function_propagates_with_its_traceback():
    class Broken(Exception):
        pass

    def judge(prompts, completions, **kwargs):
        raise Broken("the judge is down")

    for funcs in ([judge], [constant(1.0), judge]):  # in the calling thread, and in a worker
        with pytest.raises(Broken, match="the judge is down") as error:
            score(RewardFunctions(funcs))
        assert traceback.extract_tb(error.value.__traceback__)[-1].name == "judge"


@pytest.mark.parametrize("output,message", [
    ([1.0], "reward function bad returned 1 values for 2 completions"),
    ((1.0, 2.0, 3.0), "reward function bad returned 3 values for 2 completions"),
    (0.5, r"reward function bad returned a float; expected a list of 2 floats \(or None: not applicable\)"),
    ((x for x in [1.0, 2.0]), "reward function bad returned a generator"),
    ([1.0, "1"], r"reward function bad returned a str \('1'\) for completion 1; expected a float or None"),
    ([float("inf"), 1.0], r"reward function bad returned inf for completion 0; a reward must be finite"),
    (np.ones((2, 1)), r"reward function bad returned an array of shape \(2, 1\)"),
])
def test_what_a_function_returns_is_checked(output, message):
    bad = named("bad", lambda prompts, completions, **kw: output)
    with pytest.raises(InputError, match=f"^{message}"):
        score(RewardFunctions([bad]))


def test_numbers_of_every_kind_are_rewards():
    mixed = named("mixed", lambda prompts, completions, **kw: [True, np.float32(0.5), np.int64(2), 3, None])
    array = named("array", lambda prompts, completions, **kw: np.arange(5, dtype=np.int32))
    scores = score(RewardFunctions([mixed, array]), 5)
    np.testing.assert_array_equal(scores.per_function[:4], [[1.0, 0.0], [0.5, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert np.isnan(scores.per_function[4, 0]) and scores.total[4] == 4.0


# ----------------------------------------------------------------------------------------------- signatures

def test_signatures_are_checked_against_the_columns():
    def needs_answer(prompts, completions, answer, **kwargs):
        return []

    def no_kwargs(prompts, completions, completion_ids, answer, trainer_state):
        return []

    def no_state(prompts, completions, completion_ids, answer):
        return []

    def optional(prompts, completions, *, hint=None, **kwargs):
        return []

    RewardFunctions([needs_answer, no_kwargs, optional]).check_columns(["answer"], "train_dataset")
    with pytest.raises(InputError, match=r"^reward function needs_answer needs argument 'answer', which no column of "
                                         r"data\.jsonl provides; its columns: level, solution \(every function also "
                                         r"gets prompts, completions, completion_ids and trainer_state, by keyword\)$"):
        RewardFunctions([optional, needs_answer]).check_columns(["level", "solution"], "data.jsonl")
    with pytest.raises(InputError, match=r"^reward function no_kwargs takes no argument 'level' \(a column of "
                                         r"train_dataset\); it is called with prompts, completions, completion_ids, "
                                         r"trainer_state and every column of train_dataset \(answer, level\): add "
                                         r"\*\*kwargs to its parameters$"):
        RewardFunctions([no_kwargs]).check_columns(["answer", "level"], "train_dataset")
    with pytest.raises(InputError, match=r"^reward function no_state takes no argument 'trainer_state' \(what TRL "
                                         r"passes too\)"):
        RewardFunctions([no_state]).check_columns(["answer"], "train_dataset")
    with pytest.raises(InputError, match=r"^train_dataset: column 'completions' has the name of an argument"):
        RewardFunctions([optional]).check_columns(["completions"], "train_dataset")


def test_positional_only_and_uninspectable_callables():
    def positional(prompts, completions, /, **kwargs):
        return []

    with pytest.raises(InputError, match="reward function positional needs argument 'prompts'"):
        RewardFunctions([positional]).check_columns([], "rows")
    RewardFunctions([dict]).check_columns(["x"], "rows")  # a builtin without a signature is not checked ...
    with pytest.raises(InputError, match="^reward function dict returned a dict"):  # ... but what it returns is
        score(RewardFunctions([dict]))
