"""engine.replay: decode steps replayed from their recorded commands give exactly what building every step gives
(sampled and greedy, across compaction, for any steps per submit), with the same dispatches; a step that cannot
be replayed is built normally; the buffers a replay binds stay out of the pool until it closes."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import Model, ModelConfig, Tensor, ops
from wgrpo.engine.generate import generate
from wgrpo.engine.replay import MAX_ATTEMPTS, RECORDINGS, StepReplay
from tests.engine.test_generate import CONFIGS, PROMPTS, far_from_init


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request, device):
    config = ModelConfig(**CONFIGS[request.param])
    return Model.from_numpy(config, far_from_init(config), device)


def _same(a, b):
    assert [s.token_ids.tolist() for s in a.sequences] == [s.token_ids.tolist() for s in b.sequences]
    for x, y in zip(a.sequences, b.sequences):
        np.testing.assert_array_equal(x.logprobs, y.logprobs)
        assert x.finish_reason == y.finish_reason


@pytest.mark.parametrize("temperature, top_k, top_p, k_steps", [(1.0, 0, 1.0, 8), (0.8, 5, 0.9, 3), (0.0, 0, 1.0, 1)])
def test_replayed_steps_give_the_tokens_and_logprobs_built_steps_give(model, temperature, top_k, top_p, k_steps):
    common = dict(max_new_tokens=20, temperature=temperature, top_k=top_k, top_p=top_p, seed=7, num_samples=2,
                  eos_token_ids=(), steps_per_submit=k_steps)
    built = generate(model, PROMPTS, replay_steps=False, **common)
    replayed = generate(model, PROMPTS, **common)
    _same(built, replayed)
    # the first token comes from the prefill; the first decode steps may alias their buffers otherwise
    assert 20 - 1 - MAX_ATTEMPTS <= replayed.stats["replayed_steps"] <= 20 - 1 - RECORDINGS
    assert replayed.stats["dispatches"] == built.stats["dispatches"]
    assert replayed.stats["replay"][0]["dispatches_per_step"] > 0


def test_compaction_records_the_smaller_batch_again(model):
    n = 16
    free = generate(model, PROMPTS, max_new_tokens=n, temperature=0, eos_token_ids=(), replay_steps=False)
    eos = int(free.sequences[0].token_ids[1])  # prompt 0 ends at its second token, the others later or never
    common = dict(max_new_tokens=n, temperature=0, eos_token_ids=(eos,), steps_per_submit=2)
    built = generate(model, PROMPTS, replay_steps=False, **common)
    replayed = generate(model, PROMPTS, **common)
    _same(built, replayed)
    batches = [part["batch"] for part in replayed.stats["replay"]]
    assert len(batches) >= 2 and batches[0] == len(PROMPTS) and batches[-1] < len(PROMPTS)
    assert replayed.stats["replayed_steps"] > 0


def test_a_step_with_a_host_upload_is_built_normally(device):
    replay = StepReplay(device.runtime, "a toy step")
    for step in range(MAX_ATTEMPTS):
        with replay.record(step):
            ops.add(Tensor.from_numpy(np.full(3, step, np.float32), device), 1.0)
    assert not replay.ready and "host upload" in replay.failed
    with pytest.raises(RuntimeError, match="not ready"):
        replay.run(MAX_ATTEMPTS)


def test_an_upload_in_the_first_step_only_does_not_stop_replay(device):
    x = Tensor.from_numpy(np.ones(4, np.float32), device)
    replay = StepReplay(device.runtime, "a toy step")
    for step in range(RECORDINGS + 3):
        if replay.ready:
            replay.run(step)
            continue
        with replay.record(step):
            if step == 0:
                Tensor.from_numpy(np.zeros(2, np.float32), device)  # a constant made once, at the first call
            ops.add(x, 1.0)
    assert replay.ready and replay.replayed == 2


def test_a_float_param_that_moves_stops_replay_even_when_its_bits_move_evenly(device):
    x = Tensor.from_numpy(np.ones(4, np.float32), device)
    replay = StepReplay(device.runtime, "a toy step")
    for step in range(RECORDINGS):
        with replay.record(step):
            ops.mul(x, float(step + 2))  # 2.0, 3.0, 4.0: bit patterns 0x400000 apart, values not extrapolable
    assert not replay.ready and "float moves" in replay.failed


def test_a_param_that_does_not_move_linearly_stops_replay(device):
    x = Tensor.from_numpy(np.ones(4, np.float32), device)
    replay = StepReplay(device.runtime, "a toy step")
    for step in range(RECORDINGS):
        with replay.record(step):
            ops.mul(x, float(step * step + 1))  # a scalar Params field: 1, 2, 5 is not linear
    assert not replay.ready and "constant per step" in replay.failed


def test_replay_extrapolates_linear_params_and_pins_its_buffers(device):
    """A toy decode step: each row's position (a kernel with the cache length in its Params) looked up in a table
    and written into the cache's column `length`; replayed steps write the columns built steps would."""
    from wgrpo.engine.kv_cache import KVCache
    from wgrpo.engine.ops.embedding import embedding_forward

    steps, starts = 10, [0, 3]
    cache = KVCache(num_layers=1, batch=2, capacity=steps + 3, kv_heads=1, head_dim=1, starts=starts, device=device)
    table = Tensor.from_numpy(np.arange(steps + 3, dtype=np.float32).reshape(-1, 1), device)  # row i holds i
    replay = StepReplay(device.runtime, "a toy step")
    cache.length = 3
    for step in range(steps):
        if replay.ready:
            replay.run(step)
            cache.length += 1
        else:
            with replay.record(step):
                rows = embedding_forward(cache.decode_positions(), table).reshape(2, 1, 1, 1)
                cache.attend(0, rows, rows, rows)  # writes column `length`, then advances it
    # the first steps may alias their intermediates otherwise (the pool's state after set-up): recording restarts
    assert steps - MAX_ATTEMPTS <= replay.replayed <= steps - RECORDINGS
    pinned = list(replay._blocks)
    assert pinned and all(b.pinned for b in pinned)
    assert not any(b.pinned for blocks in device.runtime.pool._free.values() for b in blocks)
    replay.close()
    assert not any(b.pinned for b in pinned)
    keys = cache.k[0].numpy().reshape(2, -1)[:, 3:3 + steps]
    np.testing.assert_array_equal(keys, [[3 + s - start for s in range(steps)] for start in starts])
