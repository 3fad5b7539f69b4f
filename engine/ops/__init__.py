"""Ops on engine Tensors, each a WGSL kernel dispatch recorded into the device's current submit.

One module per kernel family; this package re-exports the public names.
"""

from engine.ops.attention import attention, attention_cached
from engine.ops.embedding import embedding
from engine.ops.elementwise import add, affine, broadcast_to, exp, gelu, mul, scale, silu
from engine.ops.grpo import grpo_loss
from engine.ops.layout import transpose
from engine.ops.lm_head import linear_token_logprobs
from engine.ops.logprob import cross_entropy, log_softmax, token_logprobs
from engine.ops.matmul import linear, matmul
from engine.ops.norm import add_rmsnorm, rmsnorm
from engine.ops.reduce import max, mean_sq, sum
from engine.ops.rope import rope, rope_qk
from engine.ops.softmax import softmax, softmax_backward
from engine.ops.swiglu import swiglu

__all__ = ["attention", "attention_cached", "add", "affine", "broadcast_to", "exp", "gelu", "mul", "scale", "silu",
           "linear", "linear_token_logprobs", "matmul", "max", "mean_sq", "softmax", "softmax_backward", "sum",
           "transpose",
           "embedding", "add_rmsnorm", "rmsnorm", "rope", "rope_qk", "swiglu",
           "cross_entropy", "log_softmax", "token_logprobs",
           "grpo_loss"]
