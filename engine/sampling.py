"""Choosing the next token on the GPU: temperature, top-k, top-p (nucleus) and greedy, seeded and counter-based.

Owns: `SamplingParams` (validated sampling options), and `sample_into`, which records one `sampling.sample_row`
dispatch (see `kernels/sampling.wgsl` for the formulas) writing the sampled ids, their log-probs and the
per-row finished flags into GPU buffers, so a decode loop can feed the ids to the next step without a host round
trip. `sample` is the one-shot form (returns Tensors) for tests and simple callers. Must not import `rl`.

Two kernels give the same bits: `sample_row` (one workgroup of 64 per row, the spec, for GPUs) and
`sample_row_subgroup` (one subgroup of 8 lanes per row with no barriers, for CPU adapters such as lavapipe, where
it needs the subgroup feature and workgroups of 8 that are one subgroup's first lanes); `sample_variant` picks.

Log-probs are those of the sampled token under softmax(logits / temperature) over the whole vocabulary (what GRPO
records as the old policy's log-probs; the top-k/top-p filter is not renormalized into them). With temperature 0
(greedy) they are taken under softmax(logits), i.e. temperature 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wgrpo.engine.errors import InputError
from wgrpo.engine.ops._common import MAX_WORKGROUPS, subgroup_refusal
from wgrpo.engine.tensor import Tensor

_U32 = (np.dtype(np.int32), np.dtype(np.uint32))
VARIANTS = ("workgroup", "subgroup")
_ENTRIES = {"workgroup": "sample_row", "subgroup": "sample_row_subgroup"}


@dataclass(frozen=True)
class SamplingParams:
    """Validated sampling options; errors name the argument and the value."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not math.isfinite(t) \
                or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = no top-k filter), got {k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 < p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus filter), got {p!r}")
        s = self.seed
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {s!r}")
        object.__setattr__(self, "temperature", float(t))
        object.__setattr__(self, "top_p", float(p))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def refusal(variant: str, device) -> str | None:
    """Why `variant` (one of VARIANTS) cannot run on `device`, in words, or None when it can (the subgroup kernels'
    probe, `engine.ops._common.subgroup_refusal`, runs once per device for every op)."""
    return subgroup_refusal(device) if variant == "subgroup" else None


def sample_variant(device, variant: str | None = None) -> str:
    """The sampling kernel for `device`: "subgroup" on a CPU adapter that can run it (a subgroup per row, no
    barriers: lavapipe pays for every barrier, and 8 lanes per row are plenty for its 8-wide SIMD), else
    "workgroup" (64 invocations per row, what a GPU wants for long vocabularies). A given `variant` (tests force
    one) is checked instead. Both give the same bits."""
    if variant is None:
        return "subgroup" if device.is_software and refusal("subgroup", device) is None else "workgroup"
    if variant not in VARIANTS:
        raise InputError(f"sample: variant must be one of {VARIANTS} or None, got {variant!r}")
    why = refusal(variant, device)
    if why is not None:
        raise InputError(f"sample: the {variant!r} variant cannot run: {why}")
    return variant


def _grid(rows: int) -> tuple[int, int]:
    x = max(1, min(rows, MAX_WORKGROUPS))
    return x, math.ceil(rows / x)


def sample_into(logits: Tensor, params: SamplingParams, step: int, seq_ids: Tensor, eos_ids: Tensor, n_eos: int,
                pad_id: int, finished: Tensor, next_ids: Tensor, tokens: Tensor, logprobs: Tensor,
                out_row: int | None = None, seq_offset: int = 0, variant: str | None = None) -> None:
    """Record the sampling of token number `step` (the RNG counter) for each row of logits (B, V).

    seq_ids (B,) u32: the sequence each row holds (its output column; seq_ids[b] + seq_offset, mod 2**32, keys its
    RNG stream, so a batch sampled in parts draws as one call over the global indices while each part's outputs
    are as wide as the part); eos_ids (>= 1,) u32 of which the first n_eos count; finished (B,) u32 (read, and set
    when an eos id is drawn; finished rows emit pad_id); next_ids (B,) i32 (written: the sampled ids); tokens
    (R, S) i32 and logprobs (R, S) f32, written at [out_row, seq_ids[b]] (out_row defaults to step). `variant`:
    "workgroup", "subgroup" or None (`sample_variant` picks); the same bits either way.
    """
    if logits.ndim != 2:
        raise ValueError(f"sample: logits must have shape (B, V), got {logits.shape}")
    rows, vocab = logits.shape
    out_row = step if out_row is None else out_row
    if isinstance(seq_offset, bool) or not isinstance(seq_offset, (int, np.integer)) or not 0 <= seq_offset < 2**32:
        raise ValueError(f"sample: seq_offset must be an integer in [0, 2**32), got {seq_offset!r}")
    for name, t in (("seq_ids", seq_ids), ("finished", finished), ("next_ids", next_ids)):
        if t.dtype not in _U32 or t.size != rows:
            raise ValueError(f"sample: {name} must be {rows} int32/uint32 values, got {t.dtype} {t.shape}")
    if tokens.ndim != 2 or logprobs.shape != tokens.shape or not 0 <= out_row < tokens.shape[0]:
        raise ValueError(f"sample: tokens/logprobs must be (R, S) with out_row {out_row} < R, got "
                         f"{tokens.shape} and {logprobs.shape}")
    seed = int(params.seed)
    values = {"rows": rows, "vocab": vocab, "step": step, "n_seq": tokens.shape[1], "seed_lo": seed & 0xFFFFFFFF,
              "seed_hi": seed >> 32, "inv_temp": 1.0 if params.greedy else 1.0 / params.temperature,
              "greedy": params.greedy, "top_k": params.top_k, "top_p": params.top_p, "pad_id": pad_id,
              "n_eos": n_eos, "out_row": out_row, "seq_offset": int(seq_offset)}
    entry = _ENTRIES[sample_variant(logits.device, variant)]
    logits.runtime.dispatch("sampling", entry, [logits, seq_ids, eos_ids, finished, next_ids, tokens, logprobs],
                            _grid(rows), values, elem=logits.elem, shapes=f"logits {logits.shape}, step {step}")


def sample(logits: Tensor, params: SamplingParams, step: int = 0, seq_ids=None,
           seq_offset: int = 0, variant: str | None = None) -> tuple[Tensor, Tensor]:
    """(tokens, logprobs) drawn from logits (B, V): row b draws token number `step` of sequence
    seq_ids[b] + seq_offset (seq_ids default to b), exactly as a decode loop would. Both results are indexed by
    seq_ids (the offset not included): shape (max(seq_ids) + 1,), int32 and float32. `variant` as in
    `sample_into`."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ValueError(f"sample: logits must be an engine.Tensor of shape (B, V), got {logits!r}")
    rows = logits.shape[0]
    device = logits.device
    ids = np.arange(rows) if seq_ids is None else np.asarray(seq_ids)
    if ids.shape != (rows,) or (rows and ids.min() < 0):
        raise ValueError(f"sample: seq_ids must be {rows} ids >= 0, got {ids!r}")
    width = int(ids.max()) + 1 if rows else 1
    tokens = Tensor.empty((1, width), np.int32, device)
    logprobs = Tensor.empty((1, width), np.float32, device)
    sample_into(logits, params, step, Tensor.from_numpy(ids.astype(np.uint32), device),
                Tensor.from_numpy(np.zeros(1, np.uint32), device), 0, 0,
                Tensor.from_numpy(np.zeros(rows, np.uint32), device), Tensor.empty((rows,), np.int32, device),
                tokens, logprobs, out_row=0, seq_offset=seq_offset, variant=variant)
    return tokens.view((width,)), logprobs.view((width,))
