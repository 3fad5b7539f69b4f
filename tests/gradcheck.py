"""Finite-difference checks of backward kernels, run on the GPU kernels themselves."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from wgrpo.engine import Tensor
from wgrpo.engine.autograd import no_grad


def check_gradients(fn: Callable[..., Tensor], inputs: Sequence[np.ndarray], device, *, eps: float = 1e-2,
                    rtol: float = 2e-2, atol: float = 2e-3, wrt: Sequence[int] | None = None, seed: int = 0,
                    directions: int = 4) -> None:
    """Compare autograd's gradients of L = sum(fn(*inputs) * w), w random, with central differences.

    Inputs of up to 64 elements are perturbed one element at a time; larger ones along `directions` random
    unit directions (L(x + eps v) - L(x - eps v)) / 2 eps = <grad, v>. Everything runs in f32 on the device,
    so eps is large and the tolerances loose; exact agreement is checked against numpy references elsewhere.
    """
    rng = np.random.default_rng(seed)
    wrt = range(len(inputs)) if wrt is None else wrt
    tensors = [Tensor.from_numpy(x, device) for x in inputs]
    for i in wrt:
        tensors[i].requires_grad_()
    out = fn(*tensors)
    weights = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(Tensor.from_numpy(weights, device))

    def loss(arrays):
        with no_grad():
            y = fn(*[Tensor.from_numpy(a, device) for a in arrays]).numpy()
        return float(np.sum(y.astype(np.float64) * weights))

    for i in wrt:
        grad = tensors[i].grad
        assert grad is not None, f"input {i} got no gradient"
        grad = grad.numpy().astype(np.float64)
        x = inputs[i].astype(np.float32)
        if x.size <= 64:
            vectors = [np.eye(x.size, dtype=np.float32)[k].reshape(x.shape) for k in range(x.size)]
        else:
            vectors = [v / np.linalg.norm(v) for v in rng.standard_normal((directions, *x.shape)).astype(np.float32)]
        for v in vectors:
            plus, minus = list(inputs), list(inputs)
            plus[i], minus[i] = x + eps * v, x - eps * v
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            analytic = float(np.sum(grad * v))
            assert abs(numeric - analytic) <= atol + rtol * max(abs(numeric), abs(analytic)), (
                f"input {i}: finite difference {numeric:.6g} vs backward {analytic:.6g}")
