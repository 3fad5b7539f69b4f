"""Generation in the memory replay: `engine.generate` and its `KVCache`, on `Sym` tensors.

Owns `ReplayCache` (k and v of every layer counted as `kv_cache`, the rows' starts, `gather` into a new cache)
and `replay_generate`: the distinct prompts prefilled once, their cache gathered into the rows of all samples,
the sampling state and outputs, then the decode steps whose tensors are those of every later step (the first
still holds the prefill's hidden states and logits), and with `early_stops` the largest cache the live rows are
gathered into (once a quarter of the rows has ended). The worst case of its sizes: every prompt distinct and of
the longest length, completions of full length. Must not import `rl`.
"""

from __future__ import annotations

import math

from wgrpo.engine import memory_ops as ops
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.memory_graph import grad_mode
from wgrpo.engine.memory_ledger import I32, U32, Host, Ledger, Sym
from wgrpo.engine.memory_model import ReplayModel


class ReplayCache:
    """`KVCache` of `batch` rows and `capacity` positions."""

    def __init__(self, ledger: Ledger, config: ModelConfig, batch: int, capacity: int):
        self.ledger, self.config, self.batch, self.capacity = ledger, config, batch, capacity
        shape = (batch, capacity, config.num_kv_heads, config.head_dim)
        with ledger.counted_as("kv_cache"):
            self.k = [ledger.empty(shape) for _ in range(config.num_layers)]
            self.v = [ledger.empty(shape) for _ in range(config.num_layers)]
        self.starts_gpu = ledger.upload(Host((batch,), U32))

    def attend(self, layer: int, q: Sym, k: Sym, v: Sym) -> Sym:
        return ops.attention_cached(q)

    def attend_qkv(self, qkv: Sym, heads: int) -> Sym:
        """`KVCache.attend_qkv`: q split out of qkv (k and v go straight into the cache), then attention."""
        batch, steps = qkv.shape[:2]
        q = self.ledger.empty((batch, steps, heads, self.config.head_dim), qkv.dtype)
        return ops.attention_cached(q)

    def gather(self, rows: int) -> "ReplayCache":
        new = ReplayCache(self.ledger, self.config, rows, self.capacity)
        for layer in range(self.config.num_layers):
            for src in (self.k[layer], self.v[layer]):
                ops.gather_rows(src, rows)
        return new


def replay_generate(model: ReplayModel, prompts: int, prompt_tokens: int, new_tokens: int, num_samples: int,
                    early_stops: bool) -> None:
    """`generate(model, prompts, max_new_tokens=new_tokens, num_samples=num_samples)` for `prompts` distinct
    prompts of `prompt_tokens` tokens."""
    ledger, cfg = model.ledger, model.config
    n_seq, width = prompts * num_samples, prompt_tokens
    steps = min(new_tokens, cfg.max_position_embeddings - prompt_tokens)
    with grad_mode(False):
        cache = ReplayCache(ledger, cfg, prompts, width + steps)
        hidden = model.hidden_states(ledger.upload(Host((prompts, width), I32)), Host((prompts, width), I32), cache)
        last = ledger.empty((n_seq, cfg.hidden_size))
        ops.gather_rows(hidden, n_seq)
        logits = model.logits(last)
        if prompts != n_seq:
            cache = cache.gather(n_seq)
        rows = n_seq
        seq_ids = ledger.upload(Host((rows,), U32))
        finished = ledger.upload(Host((rows,), U32))
        next_ids = ledger.empty((rows,), I32)
        out_tokens, out_logprobs = ledger.empty((steps, n_seq), I32), ledger.empty((steps, n_seq))
        eos_gpu = ledger.upload(Host((1,), U32))  # one id or more: one size class

        def decode() -> None:
            nonlocal hidden, logits
            hidden = model.hidden_states(next_ids.view((rows, 1)), Host((rows, 1), I32), cache)
            logits = model.logits(hidden.view((rows, cfg.hidden_size)))

        for _ in range(min(steps - 1, 2)):  # the first step still holds the prefill's hidden states
            decode()
        live = n_seq - max(1, math.ceil(n_seq / 4))  # the most rows a compaction keeps
        if early_stops and live >= 1 and steps > 1:
            cache = cache.gather(live)
            rows = live
            seq_ids = ledger.upload(Host((rows,), U32))
            finished = ledger.upload(Host((rows,), U32))
            next_ids = ledger.upload(Host((rows,), I32))
            decode()
        del seq_ids, finished, next_ids, out_tokens, out_logprobs, eos_gpu, cache, last, logits, hidden
