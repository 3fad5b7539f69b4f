"""kernels/sampling.wgsl (through engine.sampling) against numpy: greedy, log-probs, the exact Gumbel-max draw
of the counter-based RNG, the top-k / top-p kept sets, empirical frequencies, finished rows and EOS, and the
sequence offset that keys the RNG apart from the output column; and the subgroup variant (CPU adapters) against
the workgroup one (the spec), bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Tensor, sampling
from wgrpo.engine.errors import InputError
from wgrpo.engine.sampling import SamplingParams, sample, sample_into

M32 = np.uint64(0xFFFFFFFF)


def pcg4d(v: np.ndarray) -> np.ndarray:
    """The kernel's hash on uint32 columns (x, y, z, w), in uint64 arithmetic masked to 32 bits."""
    v = [(c.astype(np.uint64) * np.uint64(1664525) + np.uint64(1013904223)) & M32 for c in v]
    x, y, z, w = v

    def mix(x, y, z, w):
        x = (x + y * w) & M32
        y = (y + z * x) & M32
        z = (z + x * y) & M32
        w = (w + y * z) & M32
        return x, y, z, w

    x, y, z, w = mix(x, y, z, w)
    x, y, z, w = (c ^ (c >> np.uint64(16)) for c in (x, y, z, w))
    x, y, z, w = mix(x, y, z, w)
    return x


def gumbel(vocab: int, seq: int, step: int, seed: int) -> np.ndarray:
    i = np.arange(vocab, dtype=np.uint64)
    full = lambda value: np.full(vocab, value, np.uint64)  # noqa: E731
    seed_word = (seed & 0xFFFFFFFF) ^ (((seed >> 32) * 0x9E3779B9) & 0xFFFFFFFF)
    h = pcg4d([i, full(seq), full(step), full(seed_word)])
    u = ((h >> np.uint64(9)).astype(np.float64) + 0.5) / 2**23
    return -np.log(np.maximum(-np.log(u), 2.0**-24))


def kept_set(x: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Boolean mask of the tokens HF's top-k then top-p warpers keep, for scaled logits x (V,)."""
    keep = np.ones(x.size, bool)
    if 0 < top_k < x.size:
        keep &= x >= np.sort(x)[::-1][top_k - 1]
    if top_p < 1:
        p = np.where(keep, np.exp(x - x.max()), 0.0)
        p /= p.sum()
        order = np.argsort(-x, kind="stable")
        mass_before = np.cumsum(p[order]) - p[order]
        nucleus = np.zeros(x.size, bool)
        nucleus[order[mass_before < top_p]] = True
        keep &= nucleus
    return keep


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.mark.parametrize("rows,vocab", [(1, 1), (3, 7), (5, 1000), (2, 4099)])
def test_greedy_is_argmax_with_temperature_one_logprob(device, rng, rows, vocab):
    z = (rng.standard_normal((rows, vocab)) * 3).astype(np.float32)
    z[0, vocab // 2] = z[0].max()  # a tie: the lowest index wins, as numpy's and torch's argmax
    tokens, logprobs = sample(Tensor.from_numpy(z, device), SamplingParams(temperature=0))
    expected = z.argmax(-1)
    np.testing.assert_array_equal(tokens.numpy(), expected)
    np.testing.assert_allclose(logprobs.numpy(), log_softmax(z)[np.arange(rows), expected], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (0.9, 13, 0.8),
                                                     (1.0, 1, 1.0), (2.0, 0, 1e-6)])
def test_sample_equals_numpy_gumbel_max(device, rng, temperature, top_k, top_p):
    rows, vocab, seed, step = 6, 301, 2**40 + 12345, 7
    z = (rng.standard_normal((rows, vocab)) * 2).astype(np.float32)
    params = SamplingParams(temperature, top_k, top_p, seed)
    tokens, logprobs = sample(Tensor.from_numpy(z, device), params, step=step)
    tokens, logprobs = tokens.numpy(), logprobs.numpy()
    for b in range(rows):
        x = z[b].astype(np.float32) * np.float32(1 / temperature)
        keep = kept_set(x.astype(np.float64), top_k, top_p)
        assert keep[tokens[b]], f"row {b}: token {tokens[b]} outside the kept set"
        noisy = np.where(keep, x + gumbel(vocab, b, step, seed), -np.inf)
        top2 = np.sort(noisy)[-2:]
        if top2[1] - top2[0] > 1e-4:  # not a near-tie that f32 rounding may flip
            assert tokens[b] == noisy.argmax(), f"row {b}"
        np.testing.assert_allclose(logprobs[b], log_softmax(x)[tokens[b]], rtol=1e-5, atol=1e-5)


def test_top_k_and_top_p_keep_exactly_their_sets_with_matching_frequencies(device):
    vocab, draws = 40, 4000
    z = np.linspace(2.0, -2.0, vocab).astype(np.float32)
    logits = Tensor.from_numpy(np.tile(z, (draws, 1)), device)  # row b draws as sequence b: independent samples
    for top_k, top_p in ((7, 1.0), (0, 0.5), (10, 0.7)):
        tokens, _ = sample(logits, SamplingParams(1.0, top_k, top_p, seed=3))
        keep = kept_set(z.astype(np.float64), top_k, top_p)
        counts = np.bincount(tokens.numpy(), minlength=vocab)
        assert set(np.flatnonzero(counts)) == set(np.flatnonzero(keep)), (top_k, top_p)
        if top_k:
            assert (keep.sum() == top_k) or top_p < 1
        p = np.where(keep, np.exp(z - z.max()), 0)
        p /= p.sum()
        assert np.abs(counts / draws - p).max() < 4 * np.sqrt(p.max() / draws)


def test_same_counter_same_token_and_other_steps_differ(device, rng):
    z = rng.standard_normal((4, 500)).astype(np.float32)
    logits = Tensor.from_numpy(z, device)
    params = SamplingParams(1.0, seed=9)
    a = sample(logits, params, step=3)[0].numpy()
    np.testing.assert_array_equal(a, sample(logits, params, step=3)[0].numpy())
    # a sequence draws the same whichever row holds it
    moved = sample(Tensor.from_numpy(z[::-1].copy(), device), params, step=3, seq_ids=[3, 2, 1, 0])[0].numpy()
    np.testing.assert_array_equal(a, moved)
    others = [sample(logits, params, step=s)[0].numpy() for s in range(4, 8)]
    assert any((o != a).any() for o in others)


# sequence 95427208 at step 0 with seed 0 hashes vocabulary entry 0 to the largest 24-bit value: a uniform built
# from 24 bits rounds to 1 in f32 there and its Gumbel noise is +inf
EXTREME_SEQ = 95427208


@pytest.mark.parametrize("variant", ["workgroup", "subgroup"])
def test_the_largest_hash_draws_finite_noise(device, variant):
    z = np.zeros(1, np.uint64)
    assert int(pcg4d([z, z + EXTREME_SEQ, z, z])[0] >> np.uint64(8)) == (1 << 24) - 1
    assert np.isfinite(gumbel(1, EXTREME_SEQ, 0, 0)).all()
    if variant == "subgroup":
        needs_subgroup_variant(device)
    logits = np.array([[-60.0, 0.0]], np.float32)  # token 0 has probability e^-60: only infinite noise picks it
    tokens, _ = sample(Tensor.from_numpy(logits, device), SamplingParams(1.0, seed=0), step=0,
                       seq_offset=EXTREME_SEQ, variant=variant)
    assert tokens.numpy()[0] == 1


def test_finished_rows_emit_pad_and_eos_sets_finished(device):
    vocab = 9
    z = np.full((3, vocab), -5.0, np.float32)
    z[0, 4] = z[1, 2] = z[2, 4] = 5.0
    t = lambda a, dt: Tensor.from_numpy(np.asarray(a, dt), device)  # noqa: E731
    finished = t([0, 0, 1], np.uint32)
    next_ids = Tensor.empty((3,), np.int32, device)
    tokens, logprobs = Tensor.empty((2, 3), np.int32, device), Tensor.empty((2, 3), np.float32, device)
    sample_into(Tensor.from_numpy(z, device), SamplingParams(0.0), 1, t([0, 1, 2], np.uint32), t([4, 7], np.uint32),
                2, 8, finished, next_ids, tokens, logprobs)
    np.testing.assert_array_equal(next_ids.numpy(), [4, 2, 8])
    np.testing.assert_array_equal(tokens.numpy()[1], [4, 2, 8])
    assert logprobs.numpy()[1, 2] == 0.0
    np.testing.assert_array_equal(finished.numpy(), [1, 0, 1])


def _sample_rows(device, z, params, seq_ids, finished, width, seq_offset=0, out_row=2, step=5):
    """sample_into over logits z with outputs (out_row + 1, width): (tokens[out_row], logprobs[out_row], next_ids,
    finished) after the dispatch."""
    t = lambda a, dt: Tensor.from_numpy(np.asarray(a, dt), device)  # noqa: E731
    rows = z.shape[0]
    done, next_ids = t(finished, np.uint32), Tensor.empty((rows,), np.int32, device)
    tokens = Tensor.empty((out_row + 1, width), np.int32, device)
    logprobs = Tensor.empty((out_row + 1, width), np.float32, device)
    sample_into(Tensor.from_numpy(z, device), params, step, t(seq_ids, np.uint32), t([3], np.uint32), 1, 0, done,
                next_ids, tokens, logprobs, out_row=out_row, seq_offset=seq_offset)
    return tokens.numpy()[out_row], logprobs.numpy()[out_row], next_ids.numpy(), done.numpy()


@pytest.mark.parametrize("rows,offset", [(1, 1), (7, 13), (67, 300), (130, 4099)])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.8, 20, 0.9)])
def test_seq_offset_draws_what_a_wider_call_draws_in_its_columns(device, rng, rows, offset, temperature, top_k,
                                                                 top_p):
    # seq_ids + seq_offset key the RNG and seq_ids alone pick the column, so a part of a batch sampled with its
    # first global index as the offset fills a part-wide output with columns offset.. of the whole batch's
    vocab = 301
    z = (rng.standard_normal((rows, vocab)) * 2).astype(np.float32)
    z[:, 3] = -30.0  # the eos id: never drawn, so finished flags stay as given
    params = SamplingParams(temperature, top_k, top_p, seed=2**33 + 5)
    order = rng.permutation(rows)  # rows hold their sequences out of order, as after a compaction
    finished = (np.arange(rows) % 5 == 4).astype(np.uint32)  # finished rows emit pad in both
    part = _sample_rows(device, z, params, order, finished, rows, seq_offset=offset)
    wide = _sample_rows(device, z, params, order + offset, finished, offset + rows)
    np.testing.assert_array_equal(part[0], wide[0][offset:])
    np.testing.assert_array_equal(part[1], wide[1][offset:])
    np.testing.assert_array_equal(part[2], wide[2])
    np.testing.assert_array_equal(part[3], wide[3])
    live = finished[np.argsort(order)] == 0  # by column
    np.testing.assert_array_equal(part[0][~live], 0)


def test_seq_offset_keys_the_rng_modulo_2_32(device, rng):
    rows, vocab, seed, step, offset = 5, 200, 77, 3, 2**32 - 2  # sequences 2**32 - 2, 2**32 - 1, then 0, 1, 2
    z = rng.standard_normal((rows, vocab)).astype(np.float32)
    tokens, _ = sample(Tensor.from_numpy(z, device), SamplingParams(seed=seed), step=step, seq_offset=offset)
    tokens = tokens.numpy()
    for b in range(rows):
        noisy = z[b].astype(np.float64) + gumbel(vocab, (b + offset) % 2**32, step, seed)
        top2 = np.sort(noisy)[-2:]
        if top2[1] - top2[0] > 1e-4:  # not a near-tie that f32 rounding may flip
            assert tokens[b] == noisy.argmax(), f"row {b}"
    wrapped = sample(Tensor.from_numpy(z[2:].copy(), device), SamplingParams(seed=seed), step=step)[0].numpy()
    np.testing.assert_array_equal(tokens[2:], wrapped)


@pytest.mark.parametrize("offset", [-1, 2**32, True, 1.0])
def test_a_bad_seq_offset_is_refused(device, offset):
    with pytest.raises(ValueError, match="seq_offset"):
        sample(Tensor.from_numpy(np.zeros((2, 3), np.float32), device), SamplingParams(), seq_offset=offset)


@pytest.mark.parametrize("kwargs,match", [(dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                                          (dict(temperature=-1.0), "temperature"), (dict(top_k=-2), "top_k"),
                                          (dict(seed=-1), "seed"), (dict(temperature=float("nan")), "temperature")])
def test_bad_sampling_params_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


# ------------------------------------------------------------------------------- sample_row_subgroup vs sample_row

SETTINGS = [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (0.9, 13, 0.8), (1.0, 1, 1.0), (2.0, 0, 1e-6)]


def needs_subgroup_variant(device):
    why = sampling.refusal("subgroup", device)
    if why is not None:
        pytest.skip(why)


def both_variants(device, z, params, **kwargs):
    """{variant: (tokens, logprobs as raw bits)} of `sample` on logits z."""
    logits = Tensor.from_numpy(z, device)
    results = {}
    for variant in sampling.VARIANTS:
        tokens, logprobs = sample(logits, params, variant=variant, **kwargs)
        results[variant] = tokens.numpy(), logprobs.numpy().astype(np.float32).view(np.uint32)
    return results


# rows start on and off quads (V % 4), one chunk of 64 and partial ones, a vocabulary of 1, several lanes idle
@pytest.mark.parametrize("rows,vocab", [(1, 1), (3, 7), (5, 64), (4, 279), (3, 65), (9, 128), (2, 1000), (2, 4099)])
@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_subgroup_variant_draws_the_workgroup_variants_bits(device, rng, rows, vocab, temperature, top_k, top_p):
    needs_subgroup_variant(device)
    z = (rng.standard_normal((rows, vocab)) * 2).astype(np.float32)
    z[0, vocab // 2] = z[0].max()  # a tie
    params = SamplingParams(temperature, top_k, top_p, seed=2**40 + 77)
    results = both_variants(device, z, params, step=11, seq_offset=5)
    for got, expected in zip(results["subgroup"], results["workgroup"]):
        np.testing.assert_array_equal(got, expected)


def test_subgroup_variant_on_ties_infinities_and_f16(device, rng):
    needs_subgroup_variant(device)
    z = np.zeros((4, 93), np.float32)  # all equal: the lowest index wins greedy, every index competes otherwise
    z[1, ::3] = -np.inf  # masked-out tokens as a logits processor writes them
    z[2] = np.where(np.arange(93) % 2, 4.0, -4.0)  # few distinct values: top-k/top-p thresholds on ties
    z[3] = rng.standard_normal(93) * 50  # a sharp row
    elems = [np.float32, np.float16] if device.has_f16 else [np.float32]
    for dtype in elems:
        for temperature, top_k, top_p in SETTINGS:
            results = both_variants(device, z.astype(dtype), SamplingParams(temperature, top_k, top_p, seed=4))
            for got, expected in zip(results["subgroup"], results["workgroup"]):
                np.testing.assert_array_equal(got, expected)


def test_subgroup_variant_finishes_rows_as_the_workgroup_variant(device):
    needs_subgroup_variant(device)
    z = np.full((4, 10), -5.0, np.float32)
    z[0, 4] = z[1, 2] = z[2, 4] = z[3, 7] = 5.0
    t = lambda a, dt: Tensor.from_numpy(np.asarray(a, dt), device)  # noqa: E731
    outputs = {}
    for variant in sampling.VARIANTS:
        finished, next_ids = t([0, 0, 1, 0], np.uint32), Tensor.empty((4,), np.int32, device)
        tokens, logprobs = Tensor.empty((2, 4), np.int32, device), Tensor.empty((2, 4), np.float32, device)
        sample_into(Tensor.from_numpy(z, device), SamplingParams(0.0), 1, t([0, 1, 2, 3], np.uint32),
                    t([4, 7], np.uint32), 2, 9, finished, next_ids, tokens, logprobs, variant=variant)
        outputs[variant] = [finished.numpy(), next_ids.numpy(), tokens.numpy()[1], logprobs.numpy()[1]]  # row 1 only
    np.testing.assert_array_equal(outputs["subgroup"][0], [1, 0, 1, 1])
    np.testing.assert_array_equal(outputs["subgroup"][1], [4, 2, 9, 7])
    for got, expected in zip(outputs["subgroup"], outputs["workgroup"]):
        np.testing.assert_array_equal(got, expected)


def test_the_variant_follows_the_adapter(device, monkeypatch):
    if sampling.refusal("subgroup", device) is None:
        assert sampling.sample_variant(device) == ("subgroup" if device.is_software else "workgroup")
    monkeypatch.setattr(type(device), "is_software", property(lambda self: False))
    assert sampling.sample_variant(device) == "workgroup"  # GPUs: 64 invocations per row
    monkeypatch.setattr(type(device), "is_software", property(lambda self: True))
    monkeypatch.setattr(type(device), "has_subgroups", property(lambda self: False))
    assert sampling.sample_variant(device) == "workgroup"  # no subgroups: the fallback
    with pytest.raises(InputError, match="sample: the 'subgroup' variant cannot run: it needs the subgroup feature"):
        sample(Tensor.from_numpy(np.zeros((2, 3), np.float32), device), SamplingParams(), variant="subgroup")
    with pytest.raises(InputError, match="variant must be one of"):
        sampling.sample_variant(device, "serial")


def test_one_subgroup_probe_per_device_serves_sampling_and_attention(device, monkeypatch):
    """The lane-layout probe (`engine.ops._common.subgroup_lanes_ok`) runs once per device, and every subgroup
    kernel's refusal (sampling, attention, decode) reuses its answer."""
    if not device.has_subgroups:
        pytest.skip(f"{device.name} lacks the subgroup feature: nothing to probe")
    from wgrpo.engine.ops import _common
    from wgrpo.engine.ops.attention import eligible_variants, refusal as attention_refusal

    monkeypatch.setattr(_common, "_SUBGROUP_LANES_OK", {})  # as a fresh process
    probes = []
    dispatch = device.runtime.dispatch

    def spy(kernel, entry, *args, **kwargs):
        if "subgroup_lanes" in entry:
            probes.append(f"{kernel}.{entry}")
        return dispatch(kernel, entry, *args, **kwargs)

    monkeypatch.setattr(device.runtime, "dispatch", spy)
    why = sampling.refusal("subgroup", device)
    assert probes == ["probe.probe_subgroup_lanes"]
    assert attention_refusal("subgroup", device) == why
    eligible_variants(device)
    sample(Tensor.from_numpy(np.zeros((2, 5), np.float32), device), SamplingParams())  # picks its variant
    assert probes == ["probe.probe_subgroup_lanes"]
    assert _common._SUBGROUP_LANES_OK == {id(device): why is None}

    monkeypatch.setitem(_common._SUBGROUP_LANES_OK, id(device), False)  # as where subgroups are narrower than 8
    for refusal in (sampling.refusal, attention_refusal):
        assert refusal("subgroup", device) == f"its workgroups of 8 invocations are not 8 lanes of one subgroup on " \
                                              f"{device.name}"
    assert sampling.sample_variant(device) == "workgroup"
    assert "subgroup" not in eligible_variants(device)
    assert probes == ["probe.probe_subgroup_lanes"]
