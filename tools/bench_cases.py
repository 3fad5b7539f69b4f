"""The kernels `wgrpo bench` runs: each case is an `engine.ops` call, its numpy reference and its work count.

Owns: the list of cases and shapes (full and `--quick`), which ops exist (`hasattr(engine.ops, name)`, so the
bench runs whatever is present), and the FLOP / byte formulas. Must not import `rl`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from wgrpo.engine import ops
from wgrpo.engine.ops.attention_tuning import attention_probs, attention_reference

_NP_DTYPES = {"f32": np.float32, "f16": np.float16}


@dataclass
class Case:
    """One kernel at one shape and dtype.

    `gpu(*tensors)` records the op; `reference(*arrays)` is the numpy spec, evaluated in float64 for the check
    and in float32 for the host timing. `flops` makes it compute-bound (GFLOP/s), else `nbytes` (GB/s).
    """

    kernel: str
    label: str
    dtype: str
    shape: dict
    arrays: Callable[[np.random.Generator], list[np.ndarray]]
    gpu: Callable
    reference: Callable
    flops: int = 0
    nbytes: int = 0
    dispatches: int = 1  # an upper bound per call, so a timed submit stays within the runtime's arena
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.kernel} {self.label} {self.dtype}"


@dataclass
class Catalog:
    cases: list[Case] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ops not in engine.ops, each with a note


def _uniform(shape, dtype: str, low=-1.0, high=1.0):
    return lambda rng: rng.uniform(low, high, size=shape).astype(_NP_DTYPES[dtype])


def _swap(x, transpose: bool):
    return np.swapaxes(x, -1, -2) if transpose else x


def matmul_case(batch: int, m: int, n: int, k: int, layout: str, dtype: str, variant: str | None = None) -> Case:
    """C (batch, M, N) = op(A) @ op(B); layout "NT" means B is stored transposed, (N, K).

    `variant` forces one of `engine.ops.matmul`'s kernels; None lets the op choose for the adapter."""
    ta, tb = layout[0] == "T", layout[1] == "T"
    a_shape = (k, m) if ta else (m, k)
    b_shape = (n, k) if tb else (k, n)
    if batch > 1:
        a_shape, b_shape = (batch, *a_shape), (batch, *b_shape)
    label = (f"{batch}x" if batch > 1 else "") + f"{m}x{n}x{k} {layout}" + (f" [{variant}]" if variant else "")
    kwargs = {"variant": variant} if variant else {}

    def arrays(rng):
        return [_uniform(a_shape, dtype)(rng), _uniform(b_shape, dtype)(rng)]

    return Case(
        kernel="matmul", label=label, dtype=dtype,
        shape={"batch": batch, "M": m, "N": n, "K": k, "layout": layout, "a": list(a_shape), "b": list(b_shape),
               "variant": variant or "auto"},
        arrays=arrays,
        gpu=lambda a, b: ops.matmul(a, b, transpose_a=ta, transpose_b=tb, **kwargs),
        reference=lambda a, b: _swap(a, ta) @ _swap(b, tb),
        flops=2 * batch * m * n * k, dispatches=4,
    )


def _binary_case(name: str, n: int, dtype: str) -> Case:
    item = np.dtype(_NP_DTYPES[dtype]).itemsize
    reference = {"add": np.add, "mul": np.multiply}[name]
    return Case(kernel=name, label=f"{n}", dtype=dtype, shape={"n": n},
                arrays=lambda rng: [_uniform((n,), dtype)(rng), _uniform((n,), dtype)(rng)],
                gpu=getattr(ops, name), reference=reference, nbytes=3 * n * item)


def _silu_reference(x):
    return x / (1.0 + np.exp(-x))


def _softmax_reference(x, causal: bool = False):
    if causal:
        t = x.shape[-1]
        x = np.where(np.tril(np.ones((x.shape[-2], t), dtype=bool)), x, -np.inf)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _rmsnorm_reference(x, w, eps: float = 1e-6):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _unary_case(kernel: str, label: str, shape: tuple, dtype: str, gpu, reference, out_elems: int | None = None,
                note: str = "") -> Case:
    item = np.dtype(_NP_DTYPES[dtype]).itemsize
    size = int(np.prod(shape))
    return Case(kernel=kernel, label=label, dtype=dtype, shape={"x": list(shape)}, arrays=lambda rng: [
        _uniform(shape, dtype, -4.0, 4.0)(rng)], gpu=gpu, reference=reference,
        nbytes=(size + (size if out_elems is None else out_elems)) * item, note=note)


def _attention_reference(q, k, v, causal: bool = True):
    return attention_reference(q, k, v, causal, 1.0 / np.sqrt(q.shape[-1]))


def _attention_backward_reference(q, k, v, d_out, causal: bool = True):
    """(dq, dk, dv) of `_attention_reference` for the output gradient d_out."""
    p, keys = attention_probs(q, k, causal, 1.0 / np.sqrt(q.shape[-1]))
    b, t_q, heads, d = q.shape
    t_k, kv_heads = k.shape[1], k.shape[2]
    per_kv = heads // kv_heads
    values = np.repeat(v, per_kv, axis=2).transpose(0, 2, 1, 3)  # (B, H, T_k, D)
    grad = d_out.transpose(0, 2, 1, 3)  # (B, H, T_q, D)
    dp = np.matmul(grad, values.transpose(0, 1, 3, 2))
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True)) / np.sqrt(d)
    dq = np.matmul(ds, keys.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    dk = np.matmul(ds.transpose(0, 1, 3, 2), q.transpose(0, 2, 1, 3))  # (B, H, T_k, D)
    dv = np.matmul(p.transpose(0, 1, 3, 2), grad)

    def per_kv_head(x):  # the query heads of each kv group summed: (B, T_k, H_kv, D)
        return x.reshape(b, kv_heads, per_kv, t_k, d).sum(axis=2).transpose(0, 2, 1, 3)

    return dq, per_kv_head(dk), per_kv_head(dv)


def attention_cases(b: int, t: int, heads: int, kv_heads: int, d: int, variant: str | None = None) -> list[Case]:
    """Causal attention at (B, T, H / H_kv, D), forward and backward (dq, dk and dv from the forward's output).
    FLOPs count the products a causal mask leaves, half of the T x T scores: 4 B H T^2 D / 2 forward, 2.5 times
    that backward (FlashAttention's convention: five products of the forward's size to two)."""
    from wgrpo.engine.ops.attention import attention_backward, attention_forward

    q_shape, kv_shape = (b, t, heads, d), (b, t, kv_heads, d)
    scale = 1.0 / np.sqrt(d)
    label = f"{b}x{t} {heads}/{kv_heads} heads D={d} causal" + (f" [{variant}]" if variant else "")
    shape = {"q": list(q_shape), "kv": list(kv_shape), "causal": True, "variant": variant or "auto"}
    forward_flops = 2 * b * heads * t * t * d
    saved = {}

    def backward(q, k, v, d_out):  # the forward once per set of operands, outside the timed calls that follow
        held = saved.get("operands", ())
        if len(held) != 3 or any(x is not y for x, y in zip(held, (q, k, v))):  # the same tensors, not equal ones
            saved.update(operands=(q, k, v), forward=attention_forward(q, k, v, True, scale, variant))
        out, lse = saved["forward"]
        return attention_backward(q, k, v, out, lse, d_out, True, scale, variant=variant)

    def operands(rng, with_grad: bool):
        arrays = [_uniform(q_shape, "f32")(rng), _uniform(kv_shape, "f32")(rng), _uniform(kv_shape, "f32")(rng)]
        return arrays + [_uniform(q_shape, "f32")(rng)] if with_grad else arrays

    return [
        Case(kernel="attention", label=label, dtype="f32", shape=shape, arrays=lambda rng: operands(rng, False),
             gpu=lambda q, k, v: attention_forward(q, k, v, True, scale, variant)[0],
             reference=_attention_reference, flops=forward_flops, note="out and the log-sum-exp per row"),
        Case(kernel="attention backward", label=label, dtype="f32", shape=shape, arrays=lambda rng: operands(rng, True),
             gpu=backward, reference=_attention_backward_reference, flops=forward_flops * 5 // 2, dispatches=5,
             note="dq, dk and dv (the row sums of dO * O first)"),
    ]


def _dims(shape) -> str:
    return "x".join(str(s) for s in shape)


def _matmul_module():
    return importlib.import_module("wgrpo.engine.ops.matmul")  # `engine.ops.matmul` the attribute is the function


def _matmul_variants(device) -> tuple[list[str], Callable | None]:
    """The kernel variants `engine.ops.matmul(variant=...)` offers on `device`, and its chooser, if it has them."""
    module = _matmul_module()
    variants = getattr(module, "VARIANTS", {})
    usable = [name for name, v in variants.items() if device.has_subgroups or not getattr(v, "needs_subgroups", False)]
    return usable, getattr(module, "choose_variant", None)


def auto_variant(device, shape: dict, dtype: str) -> str:
    """The variant `ops.matmul` runs for a matmul case: the autotuner's for its class (tuned now if unknown)."""
    from wgrpo.engine.ops.matmul import Problem, choose_variant
    from wgrpo.engine.ops.matmul_tuning import tuned_variant

    layout = shape["layout"]
    problem = Problem(shape["M"], shape["N"], shape["K"], layout[0] == "T", layout[1] == "T", dtype,
                      batch=shape["batch"], stride_a=shape["M"] * shape["K"] if shape["batch"] > 1 else 0,
                      stride_b=shape["K"] * shape["N"] if shape["batch"] > 1 else 0)
    return tuned_variant(device, problem, choose_variant(device, shape["M"]))


def build_catalog(quick: bool, device) -> Catalog:
    """Every case whose op exists in `engine.ops`, at full or `--quick` shapes, for `device`'s features."""
    catalog = Catalog()
    has_f16 = device.has_f16

    def have(name: str) -> bool:
        if hasattr(ops, name):
            return True
        catalog.missing.append(f"{name}: engine.ops.{name} does not exist yet, skipped")
        return False

    if have("matmul"):
        if quick:
            shapes = [(1, 64, 64, 64, "NN"), (1, 48, 80, 32, "NT"), (1, 48, 80, 32, "TN"), (4, 32, 32, 32, "NN")]
            f16_shapes = [(1, 64, 64, 64, "NN")]
        else:
            shapes = [(1, 512, 512, 512, "NN"), (1, 512, 512, 512, "NT"), (1, 512, 512, 512, "TN"),
                      (1, 256, 1024, 384, "NT"), (1, 256, 1024, 384, "TN"), (8, 128, 128, 64, "NN")]
            f16_shapes = [(1, 512, 512, 512, "NN"), (1, 256, 1024, 384, "NT")]
        per_variant = shapes[0]
        if not quick and not device.is_software:  # a GPU's figure of merit: the big square, f32 and f16
            shapes = [(1, 4096, 4096, 4096, "NN"), (1, 4096, 4096, 4096, "NT"), *shapes]
            f16_shapes = [(1, 4096, 4096, 4096, "NN"), *f16_shapes]
            per_variant = shapes[0]
        catalog.cases += [matmul_case(*s, "f32") for s in shapes]
        variants, _ = _matmul_variants(device)
        layout = per_variant[4]  # entries made for one layout only are timed at their own
        for v in variants:
            own = getattr(_matmul_module().VARIANTS[v], "layout", None)
            catalog.cases.append(matmul_case(*per_variant[:4], own or layout, "f32", variant=v))
        if has_f16:
            catalog.cases += [matmul_case(*s, "f16") for s in f16_shapes]
        else:
            catalog.missing.append("matmul f16: the adapter lacks shader-f16, skipped")

    if have("attention"):
        from wgrpo.engine.ops.attention import eligible_variants

        shapes = [(1, 64, 4, 2, 32)] if quick else [(1, 1024, 9, 3, 64), (4, 256, 14, 2, 64), (1, 512, 9, 3, 64)]
        for s in shapes:
            catalog.cases += attention_cases(*s)
        for v in eligible_variants(device):  # each kernel family at the last shape
            catalog.cases += attention_cases(*shapes[-1], variant=v)

    n = 1 << 14 if quick else 1 << 22
    for name in ("add", "mul"):
        if have(name):
            catalog.cases.append(_binary_case(name, n, "f32"))
            if has_f16 and name == "add":
                catalog.cases.append(_binary_case(name, n, "f16"))
    if have("silu"):
        catalog.cases.append(_unary_case("silu", f"{n}", (n,), "f32", ops.silu, _silu_reference))

    if have("swiglu"):
        catalog.cases.append(Case(
            kernel="swiglu", label=f"{n}", dtype="f32", shape={"n": n},
            arrays=lambda rng: [_uniform((n,), "f32", -4.0, 4.0)(rng), _uniform((n,), "f32")(rng)],
            gpu=ops.swiglu, reference=lambda g, u: _silu_reference(g) * u, nbytes=3 * n * 4))

    rows, cols = (64, 128) if quick else (1024, 1024)
    if have("rmsnorm"):
        catalog.cases.append(Case(
            kernel="rmsnorm", label=f"{rows}x{cols}", dtype="f32", shape={"x": [rows, cols], "w": [cols]},
            arrays=lambda rng: [_uniform((rows, cols), "f32", -2.0, 2.0)(rng), _uniform((cols,), "f32", 0.5, 1.5)(rng)],
            gpu=ops.rmsnorm, reference=_rmsnorm_reference, nbytes=(2 * rows * cols + cols + rows) * 4,
            note="x and w read, y and the per-row rstd written"))
    if have("softmax"):
        catalog.cases.append(_unary_case("softmax", f"{rows}x{cols}", (rows, cols), "f32", ops.softmax,
                                         _softmax_reference, note="last axis"))
        t = 64 if quick else 512
        heads = 2 if quick else 8
        catalog.cases.append(_unary_case(
            "softmax", f"{heads}x{t}x{t} causal", (heads, t, t), "f32", lambda x: ops.softmax(x, causal=True),
            lambda x: _softmax_reference(x, causal=True), note="last axis, mask j > i"))
    if have("sum"):
        for axis in (-1, 0):
            out = cols if axis == 0 else rows
            catalog.cases.append(_unary_case(
                "sum", f"{rows}x{cols} axis={axis}", (rows, cols), "f32", lambda x, axis=axis: ops.sum(x, axis),
                lambda x, axis=axis: np.sum(x, axis=axis), out_elems=out))
    if have("transpose"):
        shape4 = (2, 32, 4, 16) if quick else (4, 256, 8, 64)
        catalog.cases.append(_unary_case("transpose", f"{rows}x{cols} (0,1)", (rows, cols), "f32",
                                         lambda x: ops.transpose(x, 0, 1), lambda x: np.swapaxes(x, 0, 1)))
        catalog.cases.append(_unary_case("transpose", f"{_dims(shape4)} (1,2)", shape4, "f32",
                                         lambda x: ops.transpose(x, 1, 2), lambda x: np.swapaxes(x, 1, 2)))
    return catalog
