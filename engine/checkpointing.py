"""Activation checkpointing: run a block without keeping its activations, and run it again in the backward.

Owns `checkpoint(run, *inputs, params=...)`, torch.utils.checkpoint's idea on engine autograd: the forward runs
`run(*inputs)` under `no_grad`, so the graph keeps only the inputs; the backward runs it once more with grad
enabled on detached copies of the inputs and backpropagates through that fresh graph, which accumulates the
parameters' `.grad` as a plain backward would and gives the inputs' gradients to the outer graph. `run` must be
deterministic (LoRA's dropout is a pure function of its seed), so the recomputed block is the block that ran.
Must not import `rl`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from wgrpo.engine.autograd import Function, backward_many, enable_grad, no_grad
from wgrpo.engine.tensor import Tensor


class _Checkpoint(Function):
    @staticmethod
    def forward(ctx, run, n_inputs, *tensors):
        inputs = tensors[:n_inputs]
        with no_grad():
            outputs = run(*inputs)
        ctx.save_for_backward(run, inputs)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        run, inputs = ctx.saved
        needs = ctx.needs_grad[2 : 2 + len(inputs)]
        detached = [x.detach().requires_grad_(need) if need else x.detach() for x, need in zip(inputs, needs)]
        with enable_grad():
            outputs = run(*detached)
        backward_many(outputs, grad_outputs)
        grads = []
        for x, need in zip(detached, needs):
            grad = x.grad if need else None
            if grad is not None:
                grad.count_as("activations")  # an input's gradient flows on; it is no parameter's
            grads.append(grad)
        return (None, None, *grads) + (None,) * (len(ctx.needs_grad) - 2 - len(inputs))


def checkpoint(run: Callable[..., Sequence[Tensor]], *inputs: Tensor,
               params: Sequence[Tensor] = ()) -> tuple[Tensor, ...]:
    """`run(*inputs)` (a tuple of Tensors) keeping only `inputs` for the backward, which runs it again.

    `params` are the tensors `run` reads that may require grad (a layer's weights or adapters): they are how
    the outer graph knows the block needs a backward when no input does (LoRA on a frozen embedding); their
    gradients accumulate in `.grad` during the recomputation."""
    return _Checkpoint.apply(run, len(inputs), *inputs, *params)
