"""Scoring a batch with TRL-style reward functions: checked before training, run where TRL runs them, combined as TRL.

Owns `RewardFunctions` (the functions, their names and weights; `check_columns` before any work; `submit` and
`score` a batch; `close`), `PendingScores` and `RewardScores`. Each function is called once per batch with
keywords, as TRL's GRPOTrainer calls it: `fn(prompts=, completions=, completion_ids=, **columns, trainer_state=)`,
and returns one value per completion: a number, or None (not applicable), which becomes NaN. A completion's reward
is the weighted sum over functions, NaN parts left out (nansum: all None gives 0, with a warning); per-function
means are nanmeans.

Threading, as TRL: the synchronous functions run in the calling thread, one after another, in their order (libraries
such as math_verify, or anything using `signal`, refuse other threads). The `async def` functions run on ONE
long-lived event loop per `RewardFunctions`, in a daemon worker thread started on first use and reused for every
batch (so an async client bound to its loop, created on the first call, still works on the next batch); a batch's
async functions are awaited together (gather). `submit` starts them on the loop, then runs the synchronous ones,
and returns at once with the async ones maybe still running: a caller generates the next chunk meanwhile and takes
`PendingScores.result()` later; `score` is `submit(...).result()`. `close()` stops the loop (also done when the
object is collected, and at interpreter exit); a later batch starts a new one.
What a function returns is checked (a list, tuple or 1-D array of len n of None or finite numbers), else an
InputError naming the function and the problem; an exception raised inside a function propagates as it was raised.
Pure Python + numpy; imports the engine only to raise its InputError.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
import warnings
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from wgrpo.rl.errors import input_error
from wgrpo.rl.reward_funcs import reward_func_name

__all__ = ["RewardFunctions", "RewardScores", "PendingScores", "ARGUMENTS"]

ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state")  # given besides the columns
_NUMBERS = (bool, int, float, np.bool_, np.integer, np.floating)
_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class RewardScores:
    """The scores of n completions: `per_function` (n, F) float64, NaN where a function returned None, in the
    order of `names`; `total` (n,) the weighted nansum."""

    names: tuple[str, ...]
    per_function: np.ndarray
    total: np.ndarray


class RewardFunctions:
    """Reward functions with their names (`reward_func_name`: unique, they label the rewards) and weights
    (`reward_weights`: one finite number per function, default 1.0 each). InputError for something not callable,
    two functions with one name, or weights of the wrong count or value."""

    def __init__(self, funcs: Sequence[Callable] | Callable, weights: Sequence[float] | None = None):
        funcs = [funcs] if callable(funcs) else list(funcs)
        if not funcs:
            raise input_error("reward functions: none given; give at least one (e.g. reward_funcs=[accuracy])")
        for index, fn in enumerate(funcs):
            if not callable(fn):
                raise input_error(f"reward function {index} is a {type(fn).__name__} ({fn!r:.40}), not a callable")
        names = [reward_func_name(fn) for fn in funcs]
        for name in names:
            if names.count(name) > 1:
                raise input_error(f"two reward functions are named {name!r}; a function's name labels its reward, so "
                                  f"give each its own (def another function, or set fn.__name__)")
        if weights is None:
            weights = [1.0] * len(funcs)
        if isinstance(weights, (str, Mapping)) or not isinstance(weights, (Sequence, np.ndarray)) \
                or len(weights) != len(funcs):
            count = len(weights) if isinstance(weights, (Sequence, np.ndarray)) and not isinstance(weights, str) \
                else type(weights).__name__
            raise input_error(f"reward_weights: got {count} for {len(funcs)} reward functions ({', '.join(names)}); "
                              f"give one number per function, in their order")
        for name, weight in zip(names, weights):
            if not isinstance(weight, _NUMBERS) or isinstance(weight, (bool, np.bool_)) \
                    or not math.isfinite(float(weight)):
                raise input_error(f"reward_weights: the weight of {name} must be a finite number, got {weight!r}")
        self.funcs = funcs
        self.names = tuple(names)
        self.weights = {name: float(weight) for name, weight in zip(names, weights)}
        self._async = [_is_async(fn) for fn in funcs]
        self._loop: asyncio.AbstractEventLoop | None = None  # the async functions' loop, started on first use
        self._loop_finalizer: weakref.finalize | None = None
        self._loop_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.funcs)

    def __repr__(self) -> str:
        return f"RewardFunctions({', '.join(f'{n}={w:g}' for n, w in self.weights.items())})"

    # before training ------------------------------------------------------------------------------------
    def check_columns(self, columns: Iterable[str], source: str) -> None:
        """InputError, before any work, for a function that could not take the arguments it will get: one that
        needs a parameter no column of `source` provides, or that has no `**kwargs` and no parameter for an
        argument it is given (TRL gives every column, and trainer_state). Callables whose signature cannot be
        read (some builtins) are not checked. Also refuses a column named like one of `ARGUMENTS`."""
        columns = list(columns)
        listed = ", ".join(columns) or "none"
        for column in columns:
            if column in ARGUMENTS:
                raise input_error(f"{source}: column {column!r} has the name of an argument every reward function "
                                  f"gets ({', '.join(ARGUMENTS)}); rename the column")
        given = ["prompts", "completions", "completion_ids", *columns, "trainer_state"]
        for name, fn in zip(self.names, self.funcs):
            try:
                parameters = list(inspect.signature(fn).parameters.values())
            except (TypeError, ValueError):
                continue
            for p in parameters:
                unbound = p.kind is inspect.Parameter.POSITIONAL_ONLY or (p.kind in _BY_KEYWORD and p.name not in given)
                if p.default is p.empty and unbound:
                    raise input_error(f"reward function {name} needs argument {p.name!r}, which no column of "
                                      f"{source} provides; its columns: {listed} (every function also gets "
                                      f"prompts, completions, completion_ids and trainer_state, by keyword)")
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                continue
            takes = {p.name for p in parameters if p.kind in _BY_KEYWORD}
            for argument in given:
                if argument not in takes:
                    what = "a column of " + source if argument in columns else "what TRL passes too"
                    raise input_error(f"reward function {name} takes no argument {argument!r} ({what}); it is "
                                      f"called with prompts, completions, completion_ids, trainer_state and every "
                                      f"column of {source} ({listed}): add **kwargs to its parameters")

    # scoring --------------------------------------------------------------------------------------------
    def score(self, prompts: Sequence, completions: Sequence, completion_ids: Sequence | None,
              columns: Mapping[str, Sequence], trainer_state: Any = None,
              weights: Mapping[str, float] | None = None) -> RewardScores:
        """Every function's values for the n completions (one entry of each argument per completion), and their
        weighted nansum (`combine`) with `weights` by name (default `self.weights`): `submit(...).result()`."""
        return self.submit(prompts, completions, completion_ids, columns, trainer_state, weights).result()

    def submit(self, prompts: Sequence, completions: Sequence, completion_ids: Sequence | None,
               columns: Mapping[str, Sequence], trainer_state: Any = None,
               weights: Mapping[str, float] | None = None) -> PendingScores:
        """`score`, started: the async functions are handed to the event loop, then the synchronous ones run
        here, one after another; it returns with the async ones maybe still running. A synchronous function's
        exception, or a bad output of one, raises here (the batch's async functions are cancelled)."""
        n = len(completions)
        lengths = {"prompts": len(prompts), **{f"column {k!r}": len(v) for k, v in columns.items()}}
        if completion_ids is not None:
            lengths["completion_ids"] = len(completion_ids)
        for what, length in lengths.items():
            if length != n:
                raise ValueError(f"reward scoring: {what} has {length} entries for {n} completions")
        clash = [k for k in columns if k in ARGUMENTS]
        if clash:
            raise input_error(f"column {clash[0]!r} has the name of an argument every reward function gets; rename it")
        arguments = {"prompts": list(prompts), "completions": list(completions),
                     "completion_ids": None if completion_ids is None else list(completion_ids),
                     **{k: list(v) for k, v in columns.items()}, "trainer_state": trainer_state}
        pending = PendingScores(self, n, weights)
        if n == 0:
            return pending
        awaited = [i for i, is_async in enumerate(self._async) if is_async]
        if awaited:  # first, so they run while the synchronous ones do
            calls = [(self.funcs[i], _copied(arguments)) for i in awaited]
            pending._await(awaited, self._run_on_loop(_gather(calls)))
        try:
            outputs = {}
            for index, is_async in enumerate(self._async):
                if is_async:
                    continue
                output = self.funcs[index](**_copied(arguments))
                if inspect.isawaitable(output):  # a plain function that returned a coroutine: awaited on the loop
                    pending._await([index], self._run_on_loop(_gather([(_awaited, {"awaitable": output})])))
                else:
                    outputs[index] = output
            for index, output in outputs.items():
                pending._collected[index] = _values(self.names[index], output, n)
        except BaseException:
            pending.cancel()
            raise
        return pending

    def close(self) -> None:
        """Stop the async functions' event loop and its thread (nothing to do when none runs); a later batch
        starts a new loop. Safe to call twice, and at interpreter exit."""
        if self._loop_finalizer is not None:
            self._loop_finalizer()

    def _run_on_loop(self, coroutine) -> Future:
        with self._loop_lock:
            if self._loop_finalizer is None or not self._loop_finalizer.alive:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve, args=(loop,), name="reward-functions-loop", daemon=True)
                thread.start()
                # holds the loop and thread, not self: stops them when self is collected or the interpreter exits
                self._loop_finalizer = weakref.finalize(self, _stop, loop, thread)
                self._loop = loop
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def __getstate__(self) -> dict:  # the loop stays with its process
        state = dict(self.__dict__)
        state.update(_loop=None, _loop_finalizer=None, _loop_lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _loop_lock=threading.Lock())

    def combine(self, per_function: np.ndarray, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """The weighted nansum of each row of `per_function` ((n, F), in the order of `names`) with `weights` by
        name (default `self.weights`; a name missing there counts 0). A row that is NaN everywhere sums to 0,
        with a warning, as TRL does; a weight naming no function raises InputError."""
        weights = self.weights if weights is None else weights
        unknown = [name for name in weights if name not in self.names]
        if unknown:
            raise input_error(f"reward weight {unknown[0]!r} names no reward function; the functions: "
                              f"{', '.join(self.names)}")
        vector = np.array([float(weights.get(name, 0.0)) for name in self.names], np.float64)
        empty = np.isnan(per_function).all(axis=1)
        if empty.any():
            warnings.warn(f"every reward function returned None for {int(empty.sum())} of {len(per_function)} "
                          f"completions (the first: completion {int(np.argmax(empty))}); their reward is 0. Make "
                          f"sure at least one function scores each completion", RuntimeWarning, stacklevel=3)
        return np.nansum(per_function * vector, axis=1)


class PendingScores:
    """A submitted batch's scores (`RewardFunctions.submit`): the synchronous functions' values are in, the async
    ones' may still be running on the event loop. `result()` waits for them and returns the `RewardScores`
    (`score`'s; an async function's exception, or a bad output of one, raises there); `done()` says whether it
    would return at once; `cancel()` cancels what still runs."""

    def __init__(self, functions: RewardFunctions, n: int, weights: Mapping[str, float] | None):
        self._functions, self._n, self._weights = functions, n, weights
        self._collected: dict[int, np.ndarray] = {}  # each function's n values, by index, as they come in
        self._futures: list[tuple[list[int], Future]] = []  # (the functions' indices, their outputs' future)
        self._scores: RewardScores | None = None

    def _await(self, indices: list[int], future: Future) -> None:
        self._futures.append((indices, future))

    def done(self) -> bool:
        return all(future.done() for _, future in self._futures)

    def cancel(self) -> None:
        for _, future in self._futures:
            future.cancel()

    def result(self) -> RewardScores:
        if self._scores is None:
            functions, n = self._functions, self._n
            if n == 0:
                self._scores = RewardScores(functions.names, np.zeros((0, len(functions))), np.zeros(0))
                return self._scores
            try:
                for indices, future in self._futures:
                    for index, output in zip(indices, future.result(), strict=True):
                        self._collected[index] = _values(functions.names[index], output, n)
            except BaseException:  # an error, or an interrupt while waiting: nothing of the batch runs on
                self.cancel()
                raise
            per_function = np.stack([self._collected[i] for i in range(len(functions))], axis=1)
            self._scores = RewardScores(functions.names, per_function, functions.combine(per_function, self._weights))
        return self._scores


def _copied(arguments: dict) -> dict:
    """A fresh copy of each list: one function's edits never reach another."""
    return {k: list(v) if isinstance(v, list) else v for k, v in arguments.items()}


async def _gather(calls: list[tuple[Callable, dict]]) -> list:
    """Every call's awaited output, the calls run together on the loop."""
    return list(await asyncio.gather(*(fn(**arguments) for fn, arguments in calls)))


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until stopped, then cancel what still runs and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # closed already
        return
    if thread is not threading.current_thread():
        thread.join(timeout=10)  # an async function that blocks the loop must not hang the interpreter's exit


async def _awaited(awaitable):
    return await awaitable


def _is_async(fn) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)
    return not inspect.isroutine(fn) and not inspect.isclass(fn) and inspect.iscoroutinefunction(call)


def _values(name: str, output, n: int) -> np.ndarray:
    """A function's output as n float64 values (None -> NaN); InputError naming the function and the problem."""
    if isinstance(output, np.ndarray):
        if output.ndim != 1:
            raise input_error(f"reward function {name} returned an array of shape {output.shape}; expected {n} "
                              f"values, one per completion")
        if output.dtype.kind in "biuf":
            items = None
            values = output.astype(np.float64)
        else:
            items = list(output)
    elif isinstance(output, (list, tuple)):
        items = output
    else:
        raise input_error(f"reward function {name} returned a {type(output).__name__}; expected a list of {n} "
                          f"floats (or None: not applicable), one per completion")
    if len(output) != n:
        raise input_error(f"reward function {name} returned {len(output)} values for {n} completions")
    if items is not None:
        values = np.empty(n, np.float64)
        for index, item in enumerate(items):
            if item is not None and not isinstance(item, _NUMBERS):
                raise input_error(f"reward function {name} returned a {type(item).__name__} ({item!r:.40}) for "
                                  f"completion {index}; expected a float or None")
            values[index] = np.nan if item is None else float(item)
    bad = np.isinf(values)
    if bad.any():
        index = int(np.argmax(bad))
        raise input_error(f"reward function {name} returned {values[index]} for completion {index}; a reward must "
                          f"be finite (or None: not applicable)")
    return values
