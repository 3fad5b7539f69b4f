"""Batched generation with a KV cache, sampling on the GPU, shared prompt prefill and stop strings.

Owns: `generate` and its result dataclasses. What it does, per call:
1. prompts (strings through the tokenizer, or token-id lists) times `num_samples` become the sequences; each
   distinct prompt is prefilled once, left-padded into one batch, and its cache rows are gathered into the rows
   of all its samples (a GRPO group shares one prefill);
2. decode steps are recorded back to back: the sampling kernel writes each sampled id into a GPU buffer the next
   step's embedding reads, so `steps_per_submit` steps (K, per adapter by default) go into one submit, and the
   host reads back only the new token ids every K steps to check end-of-text, stop strings and lengths;
3. when a quarter of the rows are finished, the live rows are gathered into a smaller batch (cache included), so
   finished sequences stop costing compute;
4. log-probs of the sampled tokens (under logits / temperature; under the plain logits when greedy) come back
   once at the end: GRPO's old-policy log-probs without a second forward.
Sampling draws from a counter-based RNG keyed by (seed, sequence index, token index): the same seed gives the same
tokens whatever K is and however rows are compacted. A call's sequence indices start at `first_sequence`, so a
batch generated in several calls (bounded memory) draws the tokens one call would: each sequence keeps its global
index. Kernels: `engine.sampling`, `engine.kv_cache`. Must not import `rl`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from wgrpo.engine.autograd import no_grad
from wgrpo.engine.errors import InputError
from wgrpo.engine.kv_cache import KVCache, gather_rows
from wgrpo.engine.replay import StepReplay
from wgrpo.engine.sampling import SamplingParams, sample_into
from wgrpo.engine.tensor import Tensor

FINISH_REASONS = ("stop", "eos", "length")
# Decode steps recorded per submit (K): a CPU adapter pays ~0.2 ms per submit and read-back, a GPU more.
STEPS_PER_SUBMIT = {"software": 8, "gpu": 16}
COMPACT_FRACTION = 0.25  # gather the live rows once this fraction of the batch is finished


@dataclass
class GeneratedSequence:
    """One sampled completion."""

    prompt_index: int  # which prompt of the call
    sample_index: int  # which of its num_samples
    prompt_ids: list[int]
    token_ids: np.ndarray  # (n,) int32: the generated tokens, the end-of-text token included, nothing after a stop
    logprobs: np.ndarray  # (n,) float32: log p(token) under softmax(logits / temperature) (temperature 1 if greedy)
    text: str | None  # the decoded completion (special tokens skipped), None without a tokenizer
    finish_reason: str  # "stop" (a stop string), "eos" (an end-of-text id) or "length"


@dataclass
class GenerationResult:
    sequences: list[GeneratedSequence]  # prompt-major: prompt 0's samples, then prompt 1's, ...
    steps: int  # decode steps run (the longest completion)
    seconds: float  # wall time of the call
    stats: dict = field(default_factory=dict)  # submits, read-backs, dispatches, rows over time

    @property
    def generated_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.sequences)

    @property
    def texts(self) -> list[str | None]:
        return [s.text for s in self.sequences]


def default_steps_per_submit(device) -> int:
    """K for this adapter (STEPS_PER_SUBMIT)."""
    return STEPS_PER_SUBMIT["software" if device.is_software else "gpu"]


# ---------------------------------------------------------------------------------------------- the forward


# ---------------------------------------------------------------------------------------------- input checks


def _prompt_ids(prompts, tokenizer, vocab: int, max_positions: int) -> list[list[int]]:
    if isinstance(prompts, np.ndarray):
        prompts = list(prompts) if prompts.ndim == 2 else [prompts]
    if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts
                                    and isinstance(prompts[0], (int, np.integer))):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of strings or token-id lists, got {prompts!r}")
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if tokenizer is None:
                raise ValueError(f"prompts[{i}] is a string but no tokenizer was given; pass tokenizer= or token ids")
            ids = tokenizer.encode(prompt).ids
        else:
            ids = np.asarray(prompt).tolist()
            if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
                raise TypeError(f"prompts[{i}] must be a string or a list of token ids, got {prompt!r}")
        if len(ids) == 0:
            raise ValueError(f"prompts[{i}] is empty ({prompt!r}): generation needs at least one prompt token")
        if min(ids) < 0 or max(ids) >= vocab:
            bad = [t for t in ids if not 0 <= t < vocab][:5]
            raise ValueError(f"prompts[{i}] holds token ids outside [0, {vocab}): {bad}")
        if len(ids) >= max_positions:
            raise ValueError(f"prompts[{i}] has {len(ids)} tokens, longer than the model's context allows "
                             f"(max_position_embeddings={max_positions} leaves room for {max_positions - 1} "
                             f"prompt tokens and at least one new one)")
        out.append([int(t) for t in ids])
    return out


def _eos_ids(model, tokenizer, eos_token_ids) -> tuple[int, ...]:
    if eos_token_ids is not None:
        ids = (eos_token_ids,) if isinstance(eos_token_ids, int) else tuple(int(t) for t in eos_token_ids)
    else:
        ids = model.config.eos_token_ids
        if not ids and tokenizer is not None:
            from wgrpo.engine.tokenizer import END_OF_TEXT

            found = tokenizer.token_to_id(END_OF_TEXT)
            ids = () if found is None else (found,)
    vocab = model.config.vocab_size
    if any(not 0 <= t < vocab for t in ids):
        raise InputError(f"eos_token_id: {ids} are not token ids of a vocabulary of {vocab} (config.json's "
                         f"eos_token_id, or generation_config.json's)")
    return ids


def _stops(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    return stops


# ---------------------------------------------------------------------------------------------- host bookkeeping


class _Track:
    """What the host knows of one sequence."""

    __slots__ = ("tokens", "limit", "done", "reason", "text", "shown")

    def __init__(self, limit: int):
        self.tokens: list[int] = []
        self.limit, self.done, self.reason, self.text, self.shown = limit, False, "length", None, 0


def _decode(tokenizer, ids, eos=()) -> str:
    """Special tokens stay in the text (`</answer>` is one, and stop strings and rewards look for it); only
    end-of-text ids are dropped."""
    return tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=False)


def _absorb(track: _Track, new: np.ndarray, eos: set, stops, tokenizer) -> None:
    """Append newly read tokens to a live sequence and settle whether (and why) it ended."""
    before = len(track.tokens)
    for token in new.tolist():
        track.tokens.append(int(token))
        if token in eos:
            track.done, track.reason = True, "eos"
            break
        if len(track.tokens) >= track.limit:
            track.done, track.reason = True, "length"
            break
    if stops and tokenizer is not None:
        text = _decode(tokenizer, track.tokens, eos)
        if any(s in text for s in stops):
            for n in range(before + 1, len(track.tokens) + 1):  # the first token that completes a stop string
                text = _decode(tokenizer, track.tokens[:n], eos)
                hits = [(text.find(s) + len(s)) for s in stops if s in text]
                if hits:
                    del track.tokens[n:]
                    track.done, track.reason, track.text = True, "stop", text[:min(hits)]
                    return


# ---------------------------------------------------------------------------------------------- generate


def generate(model, prompts, max_new_tokens: int = 256, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, stop=None, *, num_samples: int = 1, tokenizer=None,
             eos_token_ids=None, pad_token_id: int | None = None, steps_per_submit: int | None = None,
             share_prefill: bool = True, on_text: Callable[[int, str], None] | None = None,
             first_sequence: int = 0, prompt_width: int = 0, replay_steps: bool = True) -> GenerationResult:
    """Sample `num_samples` completions of each prompt; see the module docstring.

    prompts: a string, a list of strings (needs `tokenizer`), or a list of token-id lists. temperature 0 is greedy
    decoding; top_k 0 and top_p 1 turn those filters off. stop: a string or strings that end a completion (kept in
    its text and tokens; what follows is dropped); needs `tokenizer`. eos_token_ids default to the model config's,
    else the tokenizer's `<|endoftext|>`. on_text(sequence index, new text) is called as text is read back (every
    K steps), for streaming. Completions are also cut at the model's context (max_position_embeddings).
    share_prefill=False prefills every sequence's prompt on its own row (for tests and benchmarks).
    first_sequence: the global index of this call's first sequence (prompt-major, as `sequences`), which keys the
    RNG: generating prompts [a, b) with first_sequence = a * num_samples draws what one call over all prompts
    draws for them. on_text and the result stay indexed from 0 within the call.
    prompt_width: left-pad the prompts to at least this many tokens (0: to this call's longest). The calls that
    generate parts of one batch pass the whole batch's longest, so every part computes as the one call would,
    to the bit: attention then reduces over the same padded key range.
    replay_steps: after a few decode steps, replay their recorded commands instead of building each step through
    the ops (`engine.replay`; the same tokens, less host time); False builds every step (tests, benchmarks).
    """
    start_time = time.perf_counter()
    cfg, device = model.config, model.device
    sampling = SamplingParams(temperature, top_k, top_p, seed)
    for name, value, low in (("max_new_tokens", max_new_tokens, 1), ("num_samples", num_samples, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    k_steps = default_steps_per_submit(device) if steps_per_submit is None else steps_per_submit
    if isinstance(k_steps, bool) or not isinstance(k_steps, (int, np.integer)) or k_steps < 1:
        raise ValueError(f"steps_per_submit must be an integer >= 1, got {steps_per_submit!r}")
    stops = _stops(stop)
    if stops and tokenizer is None:
        raise ValueError(f"stop={stop!r} needs a tokenizer to decode the completions")
    prompt_ids = _prompt_ids(prompts, tokenizer, cfg.vocab_size, cfg.max_position_embeddings)
    if isinstance(first_sequence, bool) or not isinstance(first_sequence, (int, np.integer)) or first_sequence < 0 \
            or first_sequence + len(prompt_ids) * num_samples > 2**32:
        raise ValueError(f"first_sequence must be an integer >= 0 with room for this call's "
                         f"{len(prompt_ids) * num_samples} sequences below 2**32, got {first_sequence!r}")
    first = int(first_sequence)
    if isinstance(prompt_width, bool) or not isinstance(prompt_width, (int, np.integer)) or prompt_width < 0:
        raise ValueError(f"prompt_width must be an integer >= 0 (0: the longest prompt's), got {prompt_width!r}")
    eos = _eos_ids(model, tokenizer, eos_token_ids)
    pad = pad_token_id if pad_token_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None
                                                          else (eos[0] if eos else 0))
    runtime = device.runtime
    before = (runtime.stats.submits, runtime.stats.readbacks, runtime.stats.dispatches)

    # sequences, prompt-major; distinct prompts prefilled once
    seq_prompt = [p for p in range(len(prompt_ids)) for _ in range(num_samples)]
    unique: dict[tuple, int] = {}
    if share_prefill:
        for ids in prompt_ids:
            unique.setdefault(tuple(ids), len(unique))
        uniq = list(unique)
        seq_unique = np.array([unique[tuple(prompt_ids[p])] for p in seq_prompt], np.int64)
    else:
        uniq = [tuple(prompt_ids[p]) for p in seq_prompt]
        seq_unique = np.arange(len(seq_prompt))
    n_seq = len(seq_prompt)
    lengths = np.array([len(u) for u in uniq])
    width = max(int(lengths.max()), int(prompt_width))  # P: prompts are left-padded to this
    limits = [min(max_new_tokens, cfg.max_position_embeddings - len(prompt_ids[p])) for p in seq_prompt]
    steps = max(limits)
    capacity = width + steps
    tracks = [_Track(limit) for limit in limits]
    eos_set = set(eos)

    with no_grad():
        # prefill the distinct prompts
        starts_u = (width - lengths).astype(np.int64)
        ids = np.full((len(uniq), width), pad, np.int32)
        for u, prompt in enumerate(uniq):
            ids[u, starts_u[u]:] = prompt
        positions = np.maximum(np.arange(width)[None, :] - starts_u[:, None], 0).astype(np.int32)
        cache = KVCache.for_model(model, len(uniq), capacity, starts_u)
        hidden = model.hidden_states(Tensor.from_numpy(ids, device), positions, cache)  # (U, P, C)
        last = Tensor.empty((n_seq, cfg.hidden_size), hidden.dtype, device)  # (S, C): each sequence's prompt end
        gather_rows(hidden, seq_unique * width + width - 1, cfg.hidden_size, cfg.hidden_size, last, cfg.hidden_size)
        logits = model.logits(last)  # (S, V)
        if len(uniq) != n_seq or np.any(seq_unique != np.arange(n_seq)):
            cache = cache.gather(seq_unique)

        rows = np.arange(n_seq)  # the sequence (of this call) each batch row holds: its output column
        seq_ids = Tensor.from_numpy(rows.astype(np.uint32), device)  # + first (the sampler's seq_offset): RNG key
        finished = Tensor.from_numpy(np.zeros(n_seq, np.uint32), device)
        next_ids = Tensor.empty((n_seq,), np.int32, device)
        # time-major outputs, so K steps read back in one piece
        out_tokens = Tensor.empty((steps, n_seq), np.int32, device)
        out_logprobs = Tensor.empty((steps, n_seq), np.float32, device)
        eos_gpu = Tensor.from_numpy(np.array(eos or (0,), np.uint32), device)
        sample_into(logits, sampling, 0, seq_ids, eos_gpu, len(eos), pad, finished, next_ids, out_tokens, out_logprobs,
                    seq_offset=first)

        batch_sizes, replay_stats = [], []
        step, read_from = 1, 0
        replay = StepReplay(runtime, enabled=replay_steps)
        try:
            while True:
                chunk_end = min(steps, read_from + k_steps)
                while step < chunk_end:
                    if replay.ready:
                        replay.run(step)
                        cache.length += 1  # what the model's last layer does on the host when the step is built
                    else:
                        with replay.record(step):
                            _decode_step(model, cache, sampling, step, seq_ids, eos_gpu, len(eos), pad, finished,
                                         next_ids, out_tokens, out_logprobs, first)
                    step += 1
                batch_sizes.append(len(rows))
                # read back the chunk's tokens (one read-back per K steps) and settle each live sequence
                chunk = np.frombuffer(runtime.read(*_rows_binding(out_tokens, read_from, chunk_end)), np.int32)
                chunk = chunk.reshape(chunk_end - read_from, n_seq)
                for s in rows.tolist():
                    track = tracks[s]
                    if not track.done:
                        _absorb(track, chunk[:, s], eos_set, stops, tokenizer)
                        if on_text is not None and tokenizer is not None:
                            _stream(on_text, s, track, tokenizer, eos_set)
                read_from = chunk_end
                live = np.array([s for s in rows.tolist() if not tracks[s].done], np.int64)
                if live.size == 0 or step >= steps:
                    break
                if len(rows) - live.size >= max(1, COMPACT_FRACTION * len(rows)):
                    where = {s: r for r, s in enumerate(rows.tolist())}
                    keep = np.array([where[s] for s in live.tolist()], np.int64)
                    if replay.enabled:
                        replay_stats.append(replay.summary(len(rows)))
                    replay.close()  # new shapes and buffers from here on: record again
                    cache = cache.gather(keep)
                    rows = live
                    seq_ids = Tensor.from_numpy(rows.astype(np.uint32), device)
                    finished = Tensor.from_numpy(np.zeros(rows.size, np.uint32), device)
                    next_ids = Tensor.from_numpy(np.array([tracks[s].tokens[-1] for s in rows], np.int32), device)
            if replay.enabled:
                replay_stats.append(replay.summary(len(rows)))
        finally:
            replay.close()  # its pinned buffers go back to the pool, whatever happened
        logprobs = out_logprobs.numpy()  # (steps, S)

    sequences = []
    for s, track in enumerate(tracks):
        n = len(track.tokens)
        text = track.text
        if text is None and tokenizer is not None:
            text = _decode(tokenizer, track.tokens, eos_set)
        sequences.append(GeneratedSequence(
            prompt_index=seq_prompt[s], sample_index=s % num_samples, prompt_ids=prompt_ids[seq_prompt[s]],
            token_ids=np.array(track.tokens, np.int32), logprobs=logprobs[:n, s].astype(np.float32).copy(),
            text=text, finish_reason=track.reason))
    stats = {"submits": runtime.stats.submits - before[0], "readbacks": runtime.stats.readbacks - before[1],
             "dispatches": runtime.stats.dispatches - before[2], "steps_per_submit": k_steps,
             "batch_per_chunk": batch_sizes, "prefill_rows": len(uniq), "prompt_width": width,
             "replayed_steps": sum(r["replayed_steps"] for r in replay_stats), "replay": replay_stats}
    return GenerationResult(sequences, step, time.perf_counter() - start_time, stats)


def _decode_step(model, cache, sampling, step, seq_ids, eos_gpu, n_eos, pad, finished, next_ids, out_tokens,
                 out_logprobs, first) -> None:
    """Record decode step `step`: the last sampled ids through the model with the cache, then the sampler.
    Its tensors die with it, so every step draws the same buffers from the pool (what replaying needs)."""
    batch = cache.batch
    hidden = model.hidden_states(next_ids.view((batch, 1)), cache.decode_positions(), cache)  # (B, 1, C)
    logits = model.logits(hidden.view((batch, model.config.hidden_size)))  # (B, V)
    sample_into(logits, sampling, step, seq_ids, eos_gpu, n_eos, pad, finished, next_ids, out_tokens, out_logprobs,
                seq_offset=first)


def _rows_binding(t: Tensor, start: int, end: int):
    """(block, byte offset, bytes) of rows start .. end - 1 of a 2-D tensor."""
    block, offset, _ = t.binding()
    row = t.shape[1] * t.dtype.itemsize
    return block, offset + start * row, (end - start) * row


def _stream(on_text, s: int, track: _Track, tokenizer, eos) -> None:
    """Hand on_text the text decoded since the last call (held back while it ends in an incomplete character)."""
    text = track.text if track.text is not None else _decode(tokenizer, track.tokens, eos)
    if not track.done:
        text = text.rstrip("\ufffd")
    if len(text) > track.shown:
        on_text(s, text[track.shown:])
        track.shown = len(text)
