"""RewardFunctions: TRL's calling convention, None as NaN, weights, threads (the sync functions in the caller's, the
async ones on one long-lived loop), output and signature checks."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

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


def test_synchronous_functions_run_in_the_calling_thread_one_after_another_in_order():
    seen = []  # (name, in the main thread, in the calling thread, functions running at once)
    running = []

    def make(name):
        def fn(prompts, completions, **kwargs):
            running.append(name)
            seen.append((name, threading.current_thread() is threading.main_thread(),
                         threading.current_thread() is caller, len(running)))
            running.remove(name)
            return [1.0] * len(completions)
        return named(name, fn)

    async def judge(prompts, completions, **kwargs):
        return [0.5] * len(completions)

    caller = threading.current_thread()
    assert caller is threading.main_thread()  # pytest runs tests in the main thread, as a training script is
    for funcs in ([make("c"), make("a"), make("b")], [make("c"), judge, make("a"), make("b")]):
        seen.clear()
        scores = score(RewardFunctions(funcs))
        assert seen == [(name, True, True, 1) for name in "cab"]  # in order, never two at once
        np.testing.assert_array_equal(scores.total, [3.0 + 0.5 * (len(funcs) == 4)] * 2)


def test_a_function_may_set_a_signal_handler():
    # signal.signal raises "signal only works in main thread" anywhere else, as math_verify's timeouts would
    heard = []

    def guarded(prompts, completions, **kwargs):
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: heard.append(signum))
        try:
            signal.raise_signal(signal.SIGUSR1)
        finally:
            signal.signal(signal.SIGUSR1, previous)
        return [float(len(heard))] * len(completions)

    before = signal.getsignal(signal.SIGUSR1)
    scores = score(RewardFunctions([constant(0.0), guarded]))
    np.testing.assert_array_equal(scores.per_function[:, 1], [1.0, 1.0])
    assert heard == [signal.SIGUSR1] and signal.getsignal(signal.SIGUSR1) is before


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


def test_one_event_loop_serves_every_batch_until_closed():
    bound = {}  # what an async client (httpx, openai) binds on its first call: the running loop

    async def client(prompts, completions, **kwargs):
        loop = asyncio.get_running_loop()
        first = bound.setdefault("loop", loop)
        bound.setdefault("thread", threading.current_thread())
        if first is not loop or first.is_closed():
            raise RuntimeError("the client's loop is gone")
        await asyncio.sleep(0)
        return [1.0] * len(completions)

    functions = RewardFunctions([client])
    for _ in range(3):
        np.testing.assert_array_equal(score(functions).total, [1.0, 1.0])
    loop, thread = bound["loop"], bound["thread"]
    assert thread.daemon and thread is not threading.current_thread()
    functions.close()
    thread.join(5)
    assert loop.is_closed() and not thread.is_alive()
    functions.close()  # twice is fine
    bound.clear()
    np.testing.assert_array_equal(score(functions).total, [1.0, 1.0])  # a later batch starts a new loop
    assert bound["loop"] is not loop and not bound["loop"].is_closed()
    functions.close()


def test_a_plain_function_that_returns_a_coroutine_is_awaited_on_the_loop():
    threads = []

    async def judge(completions):
        threads.append(threading.current_thread())
        return [0.75] * len(completions)

    wrapped = named("wrapped", lambda prompts, completions, **kwargs: judge(completions))
    functions = RewardFunctions([wrapped, constant(1.0)])
    np.testing.assert_array_equal(score(functions).total, [1.75, 1.75])
    assert threads[0] is not threading.current_thread() and threads[0].name == "reward-functions-loop"
    functions.close()


def test_submit_returns_while_the_async_functions_run():
    released, ran = threading.Event(), []

    async def slow(prompts, completions, **kwargs):
        if not await asyncio.to_thread(released.wait, 10):
            raise TimeoutError("submit waited for the async function")
        return [0.5] * len(completions)

    def quick(prompts, completions, **kwargs):
        ran.append(threading.current_thread() is threading.main_thread())
        return [1.0] * len(completions)

    functions = RewardFunctions([slow, quick], weights=[2.0, 1.0])
    pending = functions.submit(["p", "q"], ["a", "b"], None, {})
    assert ran == [True] and not pending.done()  # the sync function has run; the async one waits on us
    released.set()
    scores = pending.result()
    assert pending.done() and pending.result() is scores
    np.testing.assert_array_equal(scores.per_function, [[0.5, 1.0], [0.5, 1.0]])
    np.testing.assert_array_equal(scores.total, [2.0, 2.0])
    empty = functions.submit([], [], [], {})
    assert empty.done() and empty.result().per_function.shape == (0, 2)
    functions.close()


def test_an_exception_in_a_function_propagates_with_its_traceback():
    class Broken(Exception):
        pass

    def judge(prompts, completions, **kwargs):
        raise Broken("the judge is down")

    async def remote_judge(prompts, completions, **kwargs):
        await asyncio.sleep(0)
        raise Broken("the judge is down")

    for funcs in ([judge], [constant(1.0), judge], [remote_judge, constant(1.0)]):
        with pytest.raises(Broken, match="the judge is down") as error:
            score(RewardFunctions(funcs))
        assert traceback.extract_tb(error.value.__traceback__)[-1].name in ("judge", "remote_judge")


def test_a_failing_synchronous_function_cancels_the_batchs_async_ones():
    started, cancelled = threading.Event(), threading.Event()

    async def waits(prompts, completions, **kwargs):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return [0.0] * len(completions)

    def fails(prompts, completions, **kwargs):
        assert started.wait(10)  # the async function runs meanwhile
        raise ZeroDivisionError("sync failed")

    functions = RewardFunctions([waits, fails])
    with pytest.raises(ZeroDivisionError, match="sync failed"):
        functions.submit(["p"], ["c"], None, {})
    assert cancelled.wait(10)
    functions.close()


def test_the_loop_thread_does_not_hold_up_the_interpreters_exit():
    code = ("import asyncio\nfrom wgrpo.rl.reward_scoring import RewardFunctions\n"
            "async def judge(prompts, completions, **kwargs):\n"
            "    await asyncio.sleep(0)\n"
            "    return [1.0] * len(completions)\n"
            "functions = RewardFunctions([judge])\n"
            "print(functions.score(['p'], ['c'], None, {}).total.tolist())\n")  # never closed: exit closes it
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=str(Path(__file__).parents[2]))
    assert (done.returncode, done.stdout, done.stderr) == (0, "[1.0]\n", "")


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
    async def returns(prompts, completions, **kwargs):
        return output

    for bad in (named("bad", lambda prompts, completions, **kw: output), named("bad", returns)):
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
