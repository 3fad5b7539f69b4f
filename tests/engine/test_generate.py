"""wgrpo.engine.generate: the cached decode against full forwards, batching and shared prefill against single runs,
determinism, chunks drawn with first_sequence against one call (and their buffers against the memory estimate),
log-probs against model.token_logprobs, EOS / stop strings / compaction, bad input, and greedy decoding against
transformers (oracle extra, skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Model, ModelConfig, no_grad
from wgrpo.engine.generate import generate
from wgrpo.engine.model import parameter_shapes
from tests.oracle import transformers_greedy

CONFIGS = {
    "qwen2-gqa": dict(architecture="qwen2", vocab_size=89, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2,
                      intermediate_size=72, max_position_embeddings=64, tie_word_embeddings=True),
    "llama-mha": dict(architecture="llama", vocab_size=61, hidden_size=40, num_layers=2, num_heads=5,
                      num_kv_heads=5, intermediate_size=70, max_position_embeddings=64, rope_theta=500000.0),
}
PROMPTS = [[5, 6, 7, 8, 9], [1, 2, 3], [10, 11, 12, 13, 14, 15, 16, 17], [4]]


def far_from_init(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights large enough that logits are far from uniform (greedy ties would make comparisons flaky)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in parameter_shapes(config).items():
        scale, base = (0.3, 1.0) if name.endswith("norm.weight") else (0.15, 0.0)
        state[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return state


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request, device):
    config = ModelConfig(**CONFIGS[request.param])
    return Model.from_numpy(config, far_from_init(config), device)


def greedy_reference(model, prompt, n):
    """Greedy decoding by full forwards over the whole sequence at every step (no cache)."""
    ids = list(prompt)
    with no_grad():
        for _ in range(n):
            ids.append(int(model(np.array([ids])).numpy()[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_greedy_equals_full_forward_argmax_and_batching_equals_single_runs(model):
    n = 10
    batched = generate(model, PROMPTS, max_new_tokens=n, temperature=0, eos_token_ids=(), steps_per_submit=3)
    for p, seq in zip(PROMPTS, batched.sequences):
        expected = greedy_reference(model, p, n)
        assert seq.token_ids.tolist() == expected
        single = generate(model, [p], max_new_tokens=n, temperature=0, eos_token_ids=()).sequences[0]
        assert single.token_ids.tolist() == expected
        np.testing.assert_allclose(single.logprobs, seq.logprobs, rtol=1e-4, atol=1e-5)
        assert seq.finish_reason == "length"


def test_logprobs_equal_token_logprobs_of_the_generated_sequence(model):
    result = generate(model, PROMPTS[:3], max_new_tokens=8, temperature=0.8, top_k=20, seed=4, eos_token_ids=())
    with no_grad():
        for seq in result.sequences:
            full = np.array(seq.prompt_ids + seq.token_ids.tolist())
            lp = model.token_logprobs(full[None, :-1], full[None, 1:], temperature=0.8).numpy()[0]
            np.testing.assert_allclose(seq.logprobs, lp[len(seq.prompt_ids) - 1:], rtol=1e-4, atol=1e-4)


def test_seeded_sampling_is_deterministic_and_independent_of_steps_per_submit(model):
    kwargs = dict(max_new_tokens=9, temperature=1.0, top_p=0.9, seed=11, eos_token_ids=(), num_samples=3)
    a = generate(model, PROMPTS[:2], steps_per_submit=4, **kwargs)
    b = generate(model, PROMPTS[:2], steps_per_submit=4, **kwargs)
    c = generate(model, PROMPTS[:2], steps_per_submit=1, **kwargs)
    for x, y, z in zip(a.sequences, b.sequences, c.sequences):
        assert x.token_ids.tolist() == y.token_ids.tolist() == z.token_ids.tolist()
    assert len({tuple(s.token_ids) for s in a.sequences[:3]}) > 1  # the samples of a group differ
    other = generate(model, PROMPTS[:2], steps_per_submit=4, **{**kwargs, "seed": 12})
    assert any(x.token_ids.tolist() != y.token_ids.tolist() for x, y in zip(a.sequences, other.sequences))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_batch_generated_in_chunks_draws_what_one_call_draws(model, temperature):
    # The RNG is keyed by each sequence's global index (first_sequence + its index in the call), so prompts
    # [0, 1), [1, 3), [3, 4) in three calls draw the tokens of one call over all four. A chunk's prompts are
    # left-padded to its own width, which may move logits by float rounding: log-probs agree to a tolerance, and
    # tokens exactly (a flip would need two Gumbel-perturbed logits within rounding of each other). An end-of-text
    # id drawn early finishes rows, so the compaction path runs with first_sequence > 0 too.
    kwargs = dict(max_new_tokens=9, temperature=temperature, top_p=0.95, seed=7, num_samples=3, steps_per_submit=2)
    free = generate(model, PROMPTS, eos_token_ids=(), **kwargs)
    eos = int(free.sequences[4].token_ids[1])
    whole = generate(model, PROMPTS, eos_token_ids=(eos,), **kwargs)
    chunked = []
    for start, stop in ((0, 1), (1, 3), (3, 4)):
        part = generate(model, PROMPTS[start:stop], eos_token_ids=(eos,), first_sequence=start * 3, **kwargs)
        assert [(s.prompt_index, s.sample_index) for s in part.sequences] == \
            [(p, i) for p in range(stop - start) for i in range(3)]  # indexed within the call
        chunked.extend(part.sequences)
    assert any(s.finish_reason == "eos" for s in whole.sequences)
    for x, y in zip(whole.sequences, chunked, strict=True):
        assert x.prompt_ids == y.prompt_ids and x.finish_reason == y.finish_reason
        assert x.token_ids.tolist() == y.token_ids.tolist()
        np.testing.assert_allclose(x.logprobs, y.logprobs, rtol=1e-4, atol=1e-5)
    if temperature:  # the index, not the row, keys the draws: the same prompt drawn as other sequences differs
        shifted = generate(model, PROMPTS[1:3], eos_token_ids=(), first_sequence=0, **kwargs)
        assert any(x.token_ids.tolist() != y.token_ids.tolist() for x, y in zip(shifted.sequences,
                                                                                 free.sequences[3:9]))


def test_a_later_chunk_holds_outputs_as_wide_as_itself(device):
    # first_sequence only keys the RNG (the sampler's seq_offset): a call far into a batch allocates what one at
    # first_sequence 0 does, to the byte of the memory estimate, which knows nothing of first_sequence
    from tests.engine.memory_counters import assert_matches, in_use, measured_peaks, prompts, random_model
    from wgrpo.engine.memory_estimate import estimate_generation

    config = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=192, max_position_embeddings=128)
    memory = device.runtime.memory
    base = in_use(memory)
    memory.reset_peak()
    model = random_model(config, 0, device)
    ids = prompts(config, 2, 11)
    kwargs = dict(max_new_tokens=9, num_samples=3, eos_token_ids=(), seed=1)
    far = generate(model, ids, first_sequence=2**32 - 6, **kwargs)
    estimate = estimate_generation(config, "float32", 2, 11, 9, num_samples=3, early_stops=False,
                                   max_binding_bytes=device.max_binding_bytes)
    assert_matches(estimate, measured_peaks(memory, base))
    near = generate(model, ids, **kwargs)
    assert any(x.token_ids.tolist() != y.token_ids.tolist() for x, y in zip(far.sequences, near.sequences))


def test_shared_prefill_equals_separate_prefills(model):
    kwargs = dict(max_new_tokens=7, temperature=1.0, seed=2, eos_token_ids=(), num_samples=4)
    shared = generate(model, PROMPTS[:2], **kwargs)
    separate = generate(model, PROMPTS[:2], share_prefill=False, **kwargs)
    assert shared.stats["prefill_rows"] == 2 and separate.stats["prefill_rows"] == 8
    for x, y in zip(shared.sequences, separate.sequences):
        assert (x.prompt_index, x.sample_index) == (y.prompt_index, y.sample_index)
        assert x.token_ids.tolist() == y.token_ids.tolist()
        np.testing.assert_allclose(x.logprobs, y.logprobs, rtol=1e-4, atol=1e-5)


def test_eos_ends_sequences_and_finished_rows_are_compacted_away(model):
    n = 12
    free = generate(model, PROMPTS, max_new_tokens=n, temperature=0, eos_token_ids=(), steps_per_submit=2)
    eos = int(free.sequences[0].token_ids[1])  # prompt 0 ends at its second token
    result = generate(model, PROMPTS, max_new_tokens=n, temperature=0, eos_token_ids=(eos,), steps_per_submit=2)
    for f, r in zip(free.sequences, result.sequences):
        hits = np.flatnonzero(f.token_ids == eos)
        end = hits[0] + 1 if hits.size else n
        assert r.token_ids.tolist() == f.token_ids[:end].tolist()
        assert r.finish_reason == ("eos" if hits.size else "length")
        np.testing.assert_allclose(r.logprobs, f.logprobs[:end], rtol=1e-4, atol=1e-5)
    rows = result.stats["batch_per_chunk"]
    assert rows[0] == 4 and rows[-1] < 4  # the finished row left the batch
    # one read-back of tokens per K steps, plus the log-probs at the end: no per-token round trip
    assert result.stats["readbacks"] <= len(rows) + 1 and result.stats["submits"] <= len(rows) + 1


def test_stop_strings_are_trimmed(device):
    from wgrpo.engine.tokenizer import train_tokenizer

    texts = ["the answer is <answer>42</answer> and more text follows here", "think about it then answer"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=300)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=128)
    model = Model.from_numpy(config, far_from_init(config, 3), device)
    kwargs = dict(max_new_tokens=24, temperature=1.0, seed=5, tokenizer=tokenizer, eos_token_ids=())
    free = generate(model, ["the answer is"], **kwargs).sequences[0]
    # special tokens stay in the text (the reasoning tags are special tokens); end-of-text ids do not
    assert free.text == tokenizer.decode(free.token_ids.tolist(), skip_special_tokens=False)
    stop = free.text[len(free.text) // 2: len(free.text) // 2 + 2]
    assert stop.strip(), "the free text should hold a stop candidate"
    cut = generate(model, ["the answer is"], stop=[stop, "\x00never"], steps_per_submit=5, **kwargs).sequences[0]
    assert cut.finish_reason == "stop"
    assert cut.text.endswith(stop) and stop not in cut.text[:-len(stop)]
    assert free.text.startswith(cut.text)
    n = cut.token_ids.size
    assert cut.token_ids.tolist() == free.token_ids[:n].tolist() and cut.logprobs.size == n
    assert stop in tokenizer.decode(cut.token_ids.tolist(), skip_special_tokens=False)
    assert stop not in tokenizer.decode(cut.token_ids[:-1].tolist(), skip_special_tokens=False)
    pieces = []
    streamed = generate(model, ["the answer is"], stop=stop, on_text=lambda s, t: pieces.append(t), **kwargs)
    assert "".join(pieces) == streamed.sequences[0].text == cut.text


def test_a_special_token_ends_a_completion_as_a_stop_string(device):
    from wgrpo.engine.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["<think>a</think> <answer>42</answer>"] * 20, vocab_size=300)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=4,
                         num_kv_heads=2, intermediate_size=48, max_position_embeddings=64)
    model = Model.from_numpy(config, far_from_init(config, 4), device)
    close = tokenizer.token_to_id("</answer>")
    # make </answer> likely, so the greedy completion reaches it within a few tokens
    state = model.state_dict()
    state["lm_head.weight" if "lm_head.weight" in state else "model.embed_tokens.weight"][close] += 50.0
    model = Model.from_numpy(config, state, device)
    out = generate(model, ["<think>"], max_new_tokens=8, temperature=0.0, tokenizer=tokenizer, stop="</answer>",
                   eos_token_ids=()).sequences[0]
    assert out.finish_reason == "stop" and out.text.endswith("</answer>") and out.token_ids[-1] == close
    assert out.text.count("</answer>") == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompts=[[]]), r"prompts\[0\] is empty"),
    (dict(prompts=[[1] * 64]), r"prompts\[0\] has 64 tokens, longer than the model's context"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.01), "top_p"), (dict(temperature=-0.5), "temperature"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(prompts=["text"]), "tokenizer"),
    (dict(stop="</answer>"), "stop"), (dict(prompts=[[1, 999]]), "outside"), (dict(prompts=[]), "prompts"),
    (dict(first_sequence=-1), "first_sequence"), (dict(first_sequence=True), "first_sequence"),
    (dict(first_sequence=2.0), "first_sequence"), (dict(first_sequence=2**32 - 1, num_samples=2), "first_sequence")])
def test_bad_input_gets_a_clear_error(model, kwargs, match):
    args = dict(prompts=[[1, 2]], max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate(model, args.pop("prompts"), **args)


def test_context_limit_cuts_completions(device):
    config = ModelConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                         intermediate_size=24, max_position_embeddings=12)
    model = Model.from_numpy(config, far_from_init(config, 1), device)
    result = generate(model, [[1] * 9, [2] * 3], max_new_tokens=20, temperature=0, eos_token_ids=())
    assert [len(s.token_ids) for s in result.sequences] == [3, 9]
    assert all(s.finish_reason == "length" for s in result.sequences)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_greedy_matches_transformers_generate(device, tmp_path, name):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = ModelConfig(**CONFIGS[name])
    state = far_from_init(config, 7)
    ours = Model.from_numpy(config, state, device)
    ours.save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    result = generate(ours, PROMPTS, max_new_tokens=12, temperature=0, eos_token_ids=())
    for prompt, seq in zip(PROMPTS, result.sequences):
        assert seq.token_ids.tolist() == transformers_greedy(hf, prompt, 12)
