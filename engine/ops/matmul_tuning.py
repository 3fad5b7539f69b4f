"""Which matmul variant runs a given problem: the per-adapter autotuner's answer for its shape class.

A shape class is the layout (NN, NT, TN, TT), A's element type and B's storage, whether every row length and
offset is a multiple of 4 (what vec4 loads need), then M, N and K rounded up to powers of two:
"NT|f32/bf16|a4|m8|n1024|k512". A table may answer a coarser class ("NT|f32/bf16|a4|m8": any N and K).
At first use of a class on an adapter (unless the shipped table or the cache knows it) every eligible variant
runs the problem's shape on random inputs, is checked against numpy and timed (`engine.autotune`); sizes over
`TUNE_CAP` are tuned at the cap, which keeps a tuning to a fraction of a second. The chosen variant must also
accept the very call (a window may break an alignment its class has); otherwise the adapter's default runs it.
Must not import `rl`.
"""

from __future__ import annotations

import numpy as np

from wgrpo.engine.autotune import Candidate, Problem as TuningProblem, autotuner, size_bucket

TUNE_CAP = 1024  # the largest M, N or K a tuning runs (a class above it behaves as this size)
NAIVE_MAX_FLOPS = 1 << 22  # the readable spec is timed only on problems this small
_TOLERANCE = {"f32": (1e-4, 1e-5), "f16": (2e-2, 2e-2)}


def _aligned(problem) -> bool:
    return problem.aligned_bindings and problem.unaligned_operand() is None


def shape_class(problem) -> str:
    """The tuning class of an `engine.ops.matmul.Problem`."""
    layout = ("T" if problem.transpose_a else "N") + ("T" if problem.transpose_b else "N")
    b = problem.elem if problem.weights == "elem" else problem.weights
    return (f"{layout}|{problem.elem}/{b}|{'a4' if _aligned(problem) else 'a1'}|m{size_bucket(problem.m)}|"
            f"n{size_bucket(problem.n)}|k{size_bucket(problem.k)}")


def tuning_problem(device, problem, default: str) -> TuningProblem:
    """Random operands of `problem`'s shape (capped), and every eligible variant as a candidate."""
    from wgrpo.engine.dtypes import convert, widen
    from wgrpo.engine.ops.matmul import matmul_kernel
    from wgrpo.engine.ops.matmul_variants import VARIANTS, eligible_variants
    from wgrpo.engine.tensor import Tensor

    m, n, k = (min(size, TUNE_CAP) for size in (problem.m, problem.n, problem.k))
    ta, tb = problem.transpose_a, problem.transpose_b
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    a_dtype = {"f32": "float32", "f16": "float16"}[problem.elem]
    b_dtype = a_dtype if problem.weights == "elem" else {"bf16": "bfloat16", "f16": "float16"}[problem.weights]
    a_host, b_host = convert(a, a_dtype), convert(b, b_dtype)
    a_dev, b_dev = Tensor.from_numpy(a_host, device), Tensor.from_numpy(b_host, device)
    a64, b64 = (np.asarray(widen(x), np.float64) for x in (a_host, b_host))
    expected = (a64.T if ta else a64) @ (b64.T if tb else b64)
    names = eligible_variants(device, m, n, k, ta, tb, problem.elem, problem.weights,
                              aligned_bindings=problem.aligned_bindings)
    if 2 * m * n * k > NAIVE_MAX_FLOPS:
        names = [name for name in names if name != "naive"] or names
    if device.is_software:  # workgroup tiles with barriers are 4-10x slower than sg32x4 on a CPU adapter (measured)
        names = [name for name in names if VARIANTS[name].family != "matmul_tiled"] or names
    candidates = [Candidate(name, lambda name=name: matmul_kernel(a_dev, b_dev, ta, tb, name)) for name in names]
    rtol, atol = _TOLERANCE[problem.elem]
    scale = float(np.sqrt(k))
    return TuningProblem("matmul", shape_class(problem), candidates, lambda: expected, rtol * scale, atol * scale,
                         default)


def tuned_variant(device, problem, default: str) -> str:
    """The variant for `problem` on `device`: the tuned one of its class when it accepts the call, else `default`.
    Remembered per problem, since every step asks the same questions."""
    from wgrpo.engine.ops.matmul_variants import VARIANTS

    key = (id(device), problem, default)
    name = _chosen.get(key)
    if name is None:
        name = autotuner(device).choose(lambda: tuning_problem(device, problem, default), "matmul",
                                        shape_class(problem), default)
        spec = VARIANTS.get(name)
        if spec is None or spec.refusal(device, problem) is not None:
            name = default
        if len(_chosen) >= _CHOSEN_MAX:
            _chosen.clear()
        _chosen[key] = name
    return name


_chosen: dict[tuple, str] = {}
_CHOSEN_MAX = 1 << 14
