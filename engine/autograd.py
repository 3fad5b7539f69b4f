"""Reverse-mode autograd over engine Tensors.

Owns: `Function` (an op's forward and backward side by side, in the style of torch.autograd.Function), the graph
each differentiable op result carries, `backward()` over that graph, and `no_grad()`. A leaf's `.grad` is summed
in place once it is a buffer the accumulation allocated for that leaf. A backward may hand over a `SparseGrad`
(an embedding's rows) instead of a dense Tensor: it is added into the leaf's gradient where there is one.
Gradients are Tensors computed by kernels, so a backward pass records into the same submit as the forward.
Must not import `rl`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np

from wgrpo.engine.tensor import Tensor

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Ops inside build no graph (generation, evaluation, reference-model log-probs)."""
    with _grad_mode(False):
        yield


@contextlib.contextmanager
def enable_grad():
    """Ops inside build a graph even within `no_grad` (a checkpointed layer recomputed in the backward)."""
    with _grad_mode(True):
        yield


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    previous = is_grad_enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = previous


class Context:
    """What a forward keeps for its backward."""

    def __init__(self):
        self.saved: tuple = ()
        self.needs_grad: tuple[bool, ...] = ()

    def save_for_backward(self, *values) -> None:
        self.saved = values


class _InputRecord:
    """What the backward walk needs of an input that is no leaf to fill: where its gradient goes (its node, or
    none), whether it wants one, its shape. Holding this instead of the tensor lets the forward free it."""

    __slots__ = ("_grad_fn", "requires_grad", "shape")

    def __init__(self, tensor: Tensor):
        self._grad_fn, self.requires_grad, self.shape = tensor._grad_fn, tensor.requires_grad, tensor.shape


def _input_record(value):
    """A leaf that requires grad is kept (backward fills its `.grad`); any other tensor becomes an `_InputRecord`;
    other arguments (shapes, numbers) are not kept. Backward functions read only what `ctx` saved."""
    if not isinstance(value, Tensor):
        return None
    if value._grad_fn is None and value.requires_grad:
        return value
    return _InputRecord(value)


class Node:
    """One recorded op: its Function, its context and per argument what the backward walk needs (`_input_record`)."""

    __slots__ = ("function", "ctx", "inputs", "n_outputs", "__weakref__")

    def __init__(self, function: type["Function"], ctx: Context, inputs: tuple, n_outputs: int):
        self.function, self.ctx, self.inputs, self.n_outputs = function, ctx, inputs, n_outputs


class Function:
    """Subclass with `forward(ctx, *args)` returning a Tensor or a tuple of Tensors, and
    `backward(ctx, *grad_outputs)` returning one gradient (or None) per forward argument."""

    @staticmethod
    def forward(ctx: Context, *args: Any):
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, *grad_outputs: Tensor | None):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any):
        ctx = Context()
        ctx.needs_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        outputs = cls.forward(ctx, *args)
        if is_grad_enabled() and any(ctx.needs_grad):
            inputs = tuple(_input_record(a) for a in args)
            node = Node(cls, ctx, inputs, len(outputs) if isinstance(outputs, tuple) else 1)
            for index, out in enumerate(outputs if isinstance(outputs, tuple) else (outputs,)):
                if isinstance(out, Tensor) and out.dtype.kind == "f":
                    out.requires_grad = True
                    out._grad_fn = (node, index)
        return outputs


class SparseGrad:
    """A gradient a backward may return in place of a dense Tensor (an embedding's weight: a few rows of a large
    table), of `shape` and `dtype`. `dense()` makes the Tensor; `add_into(acc)` adds it into `acc` (of that
    shape and dtype) in place, computing to the bit what `add(acc, dense())` computes. A leaf's first gradient
    is made dense, a later one added into the gradient already there; a non-leaf's is made dense."""

    __slots__ = ("shape", "dtype")

    def dense(self) -> Tensor:
        raise NotImplementedError

    def add_into(self, acc: Tensor) -> None:
        raise NotImplementedError


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.save_for_backward(x.shape)
        return x.view(shape)

    @staticmethod
    def backward(ctx, dy):
        return dy.view(ctx.saved[0]), None


def backward(root: Tensor, grad: Tensor | None = None) -> None:
    """Accumulate d(root)/d(leaf) into `.grad` of every leaf tensor with `requires_grad`."""
    if not root.requires_grad:
        raise ValueError("backward: the tensor does not require grad (no input of the ops that made it did)")
    if grad is None:
        if root.size != 1:
            raise ValueError(f"backward: a gradient is needed for a non-scalar tensor of shape {root.shape}")
        grad = Tensor.from_numpy(np.ones(root.shape, root.dtype), root.device)
    backward_many([root], [grad])


def backward_many(roots, grads) -> None:
    """Backpropagate several outputs at once, `grads[i]` into `roots[i]` (a None gradient, or a root that needs
    none, is skipped): one pass over their shared graph, as torch.autograd.backward(tensors, grad_tensors)."""
    pending: dict[tuple[int, int], Tensor] = {}  # gradient per (node, output index); leaves get theirs in .grad
    heads = []
    for root, grad in zip(roots, grads, strict=True):
        if grad is None or not root.requires_grad:
            continue
        if grad.shape != root.shape:
            raise ValueError(f"backward: gradient shape {grad.shape} differs from the tensor's {root.shape}")
        if root._grad_fn is None:
            _accumulate_leaf(root, grad)
            continue
        key = (id(root._grad_fn[0]), root._grad_fn[1])
        pending[key] = grad if key not in pending else _add(pending[key], grad)
        heads.append(root._grad_fn[0])
    for node in _topological_order(heads):
        grads_out = tuple(pending.pop((id(node), i), None) for i in range(node.n_outputs))
        if all(g is None for g in grads_out):
            continue
        with no_grad():
            grads_in = node.function.backward(node.ctx, *grads_out)
        if not isinstance(grads_in, tuple):
            grads_in = (grads_in,)
        if len(grads_in) != len(node.inputs):
            raise RuntimeError(f"{node.function.__name__}.backward returned {len(grads_in)} gradients "
                               f"for {len(node.inputs)} inputs")
        for value, g in zip(node.inputs, grads_in):
            if g is None or value is None or not value.requires_grad:
                continue
            if g.shape != value.shape:
                raise RuntimeError(f"{node.function.__name__}.backward gave a gradient of shape {g.shape} "
                                   f"for an input of shape {value.shape}")
            if value._grad_fn is None:
                _accumulate_leaf(value, g)
            else:
                if isinstance(g, SparseGrad):
                    g = g.dense()
                key = (id(value._grad_fn[0]), value._grad_fn[1])
                pending[key] = g if key not in pending else _add(pending[key], g)
        node.ctx.saved = ()  # free what the forward kept: this graph is single-use, as in torch


class _AccumulatedGrad(Tensor):
    """A leaf's `.grad` that `_accumulate_leaf` allocated for that leaf (a sum of its gradients): while `owned`, no
    other tensor holds its buffer, so later gradients are added into it in place. A gradient a backward handed
    over is never written: it may be some op's output still referenced, or also another leaf's (an add's
    backward passes one dy to both operands)."""

    __slots__ = ("owned",)

    def __init__(self, grad: Tensor):
        super().__init__(grad._storage, grad.shape, grad.dtype, grad.device, grad._offset, grad._parts)
        self.owned = True


def _accumulate_leaf(leaf: Tensor, grad: Tensor | SparseGrad) -> None:
    if isinstance(grad, SparseGrad):
        if leaf.grad is None:
            leaf.grad = _AccumulatedGrad(grad.dense())  # made here for this leaf alone: owned
            leaf.grad.count_as("gradients")
            return
        if leaf.grad.dtype == grad.dtype and (_owned(leaf.grad) or _copyable(leaf.grad)):
            if not _owned(leaf.grad):  # never written: a copy the leaf owns takes the rows
                leaf.grad = _AccumulatedGrad(_copy(leaf.grad))
                leaf.grad.count_as("gradients")
            grad.add_into(leaf.grad)
            return
        grad = grad.dense()
    if leaf.grad is None:
        if isinstance(grad, _AccumulatedGrad):
            grad.owned = False  # another leaf's sum handed on (a checkpointed block's input gradient): shared now
        leaf.grad = grad
    elif isinstance(leaf.grad, _AccumulatedGrad) and leaf.grad.owned:
        from wgrpo.engine.ops.elementwise import add_

        add_(leaf.grad, grad)
        return
    else:
        leaf.grad = _AccumulatedGrad(_add(leaf.grad, grad))
    leaf.grad.count_as("gradients")


def _owned(grad: Tensor) -> bool:
    return isinstance(grad, _AccumulatedGrad) and grad.owned


def _copyable(grad: Tensor) -> bool:
    """A fresh tensor of its shape is held in the same row blocks (so each block copies as one buffer)."""
    from wgrpo.engine.tensor import row_partition

    blocks = row_partition(grad.shape, grad.dtype, grad.device.max_binding_bytes)
    return grad.row_ranges == (blocks or [(0, grad.shape[0])])


def _copy(grad: Tensor) -> Tensor:
    """A new tensor holding grad's values: a buffer copy per row block, no kernel."""
    out = Tensor.empty(grad.shape, grad.dtype, grad.device)
    for src, dst in zip(grad.parts, out.parts, strict=True):
        grad.runtime.copy(src, dst)
    return out


def _add(a: Tensor, b: Tensor) -> Tensor:
    from wgrpo.engine.ops.elementwise import add

    return add(a, b)


def _topological_order(heads: list[Node]) -> list[Node]:
    """The nodes reachable from `heads`, each after every node that consumes its outputs."""
    order, visited = [], set()
    stack = [(node, False) for node in reversed(heads)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for value in node.inputs:
            if value is not None and value._grad_fn is not None and id(value._grad_fn[0]) not in visited:
                stack.append((value._grad_fn[0], False))
    return order[::-1]
