"""Autograd and activation checkpointing of the memory replay, on `memory_ledger.Sym` tensors.

Owns the mirror of `engine.autograd` (`Function.apply` recording a `Node` that holds the leaves it was applied to,
a record of its other inputs and what its forward saved, `backward` / `backward_many` walking the nodes in the
same order, freeing each node's saved tensors after its backward, gradients pending per node output and
accumulated into a leaf's `.grad`, in place once the leaf owns a sum) and of `engine.checkpointing.checkpoint`.
The same references are held for the same time as in those modules, so a tensor's bytes are freed when the
engine frees its buffer. Must not import `rl`.
"""

from __future__ import annotations

import contextlib
import threading

from wgrpo.engine.memory_ledger import Sym

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def grad_mode(enabled: bool):
    """`engine.autograd.no_grad()` (False) and `enable_grad()` (True)."""
    previous = is_grad_enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = previous


class Context:
    __slots__ = ("saved", "needs_grad")

    def __init__(self):
        self.saved: tuple = ()
        self.needs_grad: tuple[bool, ...] = ()

    def save_for_backward(self, *values) -> None:
        self.saved = values


class _InputRecord:
    """`autograd._InputRecord`: an input's node, requires_grad and shape, without its tensor."""

    __slots__ = ("grad_fn", "requires_grad", "shape")

    def __init__(self, value: Sym):
        self.grad_fn, self.requires_grad, self.shape = value.grad_fn, value.requires_grad, value.shape


def _input_record(value):
    if not isinstance(value, Sym):
        return None
    if value.grad_fn is None and value.requires_grad:
        return value
    return _InputRecord(value)


class Node:
    __slots__ = ("function", "ctx", "inputs", "n_outputs")

    def __init__(self, function, ctx: Context, inputs: tuple, n_outputs: int):
        self.function, self.ctx, self.inputs, self.n_outputs = function, ctx, inputs, n_outputs


class Function:
    """An op's forward (the tensors it creates) and backward (the gradients it creates), as in the engine."""

    @classmethod
    def apply(cls, *args):
        ctx = Context()
        ctx.needs_grad = tuple(isinstance(a, Sym) and a.requires_grad for a in args)
        outputs = cls.forward(ctx, *args)
        if is_grad_enabled() and any(ctx.needs_grad):
            node = Node(cls, ctx, tuple(_input_record(a) for a in args),
                        len(outputs) if isinstance(outputs, tuple) else 1)
            for index, out in enumerate(outputs if isinstance(outputs, tuple) else (outputs,)):
                if isinstance(out, Sym) and out.dtype.kind == "f":
                    out.requires_grad = True
                    out.grad_fn = (node, index)
        return outputs


class SparseGrad:
    """`autograd.SparseGrad`: a gradient of `shape` and `dtype` that `dense()` makes a Sym of and `add_into(acc)`
    adds into one in place (creating only what the op's row add uploads)."""

    __slots__ = ("shape", "dtype")


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.save_for_backward(x.shape)
        return x.view(shape)

    @staticmethod
    def backward(ctx, dy):
        return dy.view(ctx.saved[0]), None


def backward(root: Sym) -> None:
    """`Tensor.backward()` of a scalar: the seed of ones, then `backward_many`."""
    grad = root.ledger.empty(root.shape, root.dtype)
    backward_many([root], [grad])


def backward_many(roots, grads) -> None:
    pending: dict[tuple[int, int], Sym] = {}
    heads = []
    for root, grad in zip(roots, grads, strict=True):
        if grad is None or not root.requires_grad:
            continue
        if root.grad_fn is None:
            _accumulate_leaf(root, grad)
            continue
        key = (id(root.grad_fn[0]), root.grad_fn[1])
        pending[key] = grad if key not in pending else _add(pending[key], grad)
        heads.append(root.grad_fn[0])
    for node in _topological_order(heads):
        grads_out = tuple(pending.pop((id(node), i), None) for i in range(node.n_outputs))
        if all(g is None for g in grads_out):
            continue
        with grad_mode(False):
            grads_in = node.function.backward(node.ctx, *grads_out)
        if not isinstance(grads_in, tuple):
            grads_in = (grads_in,)
        for value, g in zip(node.inputs, grads_in):
            if g is None or value is None or not value.requires_grad:
                continue
            if value.grad_fn is None:
                _accumulate_leaf(value, g)
            else:
                if isinstance(g, SparseGrad):
                    g = g.dense()
                key = (id(value.grad_fn[0]), value.grad_fn[1])
                pending[key] = g if key not in pending else _add(pending[key], g)
        node.ctx.saved = ()


def _accumulate_leaf(leaf: Sym, grad: Sym) -> None:
    """A leaf's first gradient is kept as handed over; the second is summed into a fresh buffer the leaf owns,
    and every later one is added into that in place (nothing created). A `SparseGrad` is made dense when it is
    the first (then owned); later it is added into the leaf's sum, or into a copy the leaf then owns."""
    if isinstance(grad, SparseGrad):
        if leaf.grad is None:
            leaf.grad = grad.dense()
            leaf.grad.owned_grad = True
            leaf.grad.count_as("gradients")
            return
        if leaf.grad.dtype == grad.dtype:
            if not leaf.grad.owned_grad:
                leaf.grad = leaf.ledger.empty(leaf.grad.shape, leaf.grad.dtype)  # the buffer copy
                leaf.grad.owned_grad = True
                leaf.grad.count_as("gradients")
            grad.add_into(leaf.grad)
            return
        grad = grad.dense()
    if leaf.grad is None:
        grad.owned_grad = False
        leaf.grad = grad
    elif leaf.grad.owned_grad:
        return
    else:
        leaf.grad = _add(leaf.grad, grad)
        leaf.grad.owned_grad = True
    leaf.grad.count_as("gradients")


def _add(a: Sym, b: Sym) -> Sym:
    from wgrpo.engine.memory_ops import add

    return add(a, b)


def _topological_order(heads: list[Node]) -> list[Node]:
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
            if value is not None and value.grad_fn is not None and id(value.grad_fn[0]) not in visited:
                stack.append((value.grad_fn[0], False))
    return order[::-1]


class _Checkpoint(Function):
    @staticmethod
    def forward(ctx, run, n_inputs, *tensors):
        inputs = tensors[:n_inputs]
        with grad_mode(False):
            outputs = run(*inputs)
        ctx.save_for_backward(run, inputs)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        run, inputs = ctx.saved
        needs = ctx.needs_grad[2 : 2 + len(inputs)]
        detached = [x.detach().requires_grad_(need) if need else x.detach() for x, need in zip(inputs, needs)]
        with grad_mode(True):
            outputs = run(*detached)
        backward_many(outputs, grad_outputs)
        grads = []
        for x, need in zip(detached, needs):
            grad = x.grad if need else None
            if grad is not None:
                grad.count_as("activations")
            grads.append(grad)
        return (None, None, *grads) + (None,) * (len(ctx.needs_grad) - 2 - len(inputs))


def checkpoint(run, *inputs: Sym, params=()) -> tuple[Sym, ...]:
    """`engine.checkpointing.checkpoint`: `run(*inputs)` without a graph, run again in the backward."""
    return _Checkpoint.apply(run, len(inputs), *inputs, *params)
