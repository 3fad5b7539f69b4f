"""Ops on engine Tensors, each a WGSL kernel dispatch recorded into the device's current submit.

One module per kernel family; this package re-exports the public names.
"""

from wgrpo.engine.ops.attention import attention, attention_cached
from wgrpo.engine.ops.dropout import dropout
from wgrpo.engine.ops.embedding import embedding
from wgrpo.engine.ops.elementwise import add, affine, broadcast_to, exp, gelu, mul, scale, silu
from wgrpo.engine.ops.grpo import grpo_loss
from wgrpo.engine.ops.layout import transpose
from wgrpo.engine.ops.lm_head import linear_token_logprobs
from wgrpo.engine.ops.logprob import cross_entropy, log_softmax, nll_loss, token_logprobs
from wgrpo.engine.ops.matmul import linear, matmul
from wgrpo.engine.ops.norm import add_rmsnorm, rmsnorm
from wgrpo.engine.ops.qkv import add_linear_columns, fused_linear, qkv_split, qkv_split_into_cache
from wgrpo.engine.ops.reduce import max, mean_sq, sum
from wgrpo.engine.ops.rope import rope, rope_qk
from wgrpo.engine.ops.rows import put_rows, take_rows
from wgrpo.engine.ops.softmax import softmax, softmax_backward
from wgrpo.engine.ops.swiglu import swiglu, swiglu_fused

__all__ = ["attention", "attention_cached", "add", "affine", "broadcast_to", "exp", "gelu", "mul", "scale", "silu",
           "linear", "linear_token_logprobs", "matmul", "max", "mean_sq", "softmax", "softmax_backward", "sum",
           "transpose",
           "embedding", "add_rmsnorm", "rmsnorm", "rope", "rope_qk", "swiglu", "swiglu_fused",
           "add_linear_columns", "fused_linear", "qkv_split", "qkv_split_into_cache",
           "cross_entropy", "log_softmax", "nll_loss", "token_logprobs",
           "dropout", "grpo_loss", "put_rows", "take_rows"]
