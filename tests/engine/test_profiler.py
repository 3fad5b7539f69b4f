"""engine.profiler: every dispatch inside a profile is timed and named, by entry and by shape; results are those
of an unprofiled run; a profile longer than one submit's timestamp queries flushes and loses nothing; replayed
decode steps are named by their pipelines; bad use is refused before any work."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import InputError, Model, ModelConfig, Tensor, ops
from wgrpo.engine import profiler
from wgrpo.engine.generate import generate
from wgrpo.engine.profiler import profile
from tests.engine.test_generate import CONFIGS, PROMPTS, far_from_init


@pytest.fixture
def timed_device(device):
    if not device.has_timestamps:
        pytest.skip("adapter lacks timestamp queries")
    return device


def test_each_dispatch_is_counted_under_its_entry_and_shape(timed_device, rng):
    x = Tensor.from_numpy(rng.standard_normal((37, 5)).astype(np.float32), timed_device)
    y = Tensor.from_numpy(rng.standard_normal((37, 5)).astype(np.float32), timed_device)
    expected_sum = x.numpy() + y.numpy()
    with profile(timed_device) as p:
        total = ops.add(x, y)
        for _ in range(3):
            activated = ops.silu(x)
    by_entry = {row["kernel"]: row for row in p.rows()}
    assert by_entry["elementwise.silu_naive"]["calls"] == 3
    assert sum(row["calls"] for row in p.rows()) == p.calls == 4
    assert all(row["seconds"] > 0 for row in p.rows())
    assert sum(row["share"] for row in p.rows()) == pytest.approx(1.0)
    assert p.rows()[0]["seconds"] >= p.rows()[-1]["seconds"]
    shapes = {(row["kernel"], row["shapes"]) for row in p.rows(by_shape=True)}
    assert any(kernel.startswith("elementwise.add") and "(37, 5)" in shape for kernel, shape in shapes)
    np.testing.assert_allclose(total.numpy(), expected_sum, rtol=1e-6)
    np.testing.assert_allclose(activated.numpy(), x.numpy() / (1 + np.exp(-x.numpy())), rtol=1e-5)
    assert timed_device.runtime.profiler is None


def test_a_profile_longer_than_one_submit_flushes_and_keeps_every_dispatch(timed_device, monkeypatch):
    monkeypatch.setattr(profiler, "QUERY_PAIRS", 3)
    x = Tensor.from_numpy(np.full(8, 0.5, np.float32), timed_device)
    submits = timed_device.runtime.stats.submits
    with profile(timed_device) as p:
        for _ in range(10):
            x = ops.affine(x, 1.0, 1.0)
    assert p.calls == 10
    assert timed_device.runtime.stats.submits - submits >= 4  # 3 dispatches fit each submit's queries
    np.testing.assert_allclose(x.numpy(), np.full(8, 10.5), rtol=1e-6)


def test_replayed_decode_steps_are_profiled_and_give_the_same_tokens(timed_device):
    config = ModelConfig(**CONFIGS[sorted(CONFIGS)[0]])
    model = Model.from_numpy(config, far_from_init(config), timed_device)
    common = dict(max_new_tokens=12, temperature=1.0, seed=3, num_samples=2, eos_token_ids=())
    plain = generate(model, PROMPTS, **common)
    with profile(timed_device) as p:
        profiled = generate(model, PROMPTS, **common)
    assert [s.token_ids.tolist() for s in plain.sequences] == [s.token_ids.tolist() for s in profiled.sequences]
    assert profiled.stats["replayed_steps"] > 0
    replayed = [row for row in p.rows(by_shape=True) if row["shapes"] == "replayed"]
    assert replayed and all("." in row["kernel"] for row in replayed)  # named kernel.entry by the pipeline label
    assert p.calls == profiled.stats["dispatches"]


def test_profiles_do_not_nest(timed_device):
    with profile(timed_device):
        with pytest.raises(InputError, match="already on"):
            with profile(timed_device):
                pass


def test_an_adapter_without_timestamps_is_named(device):
    class NoTimestamps:
        name, has_timestamps = "some adapter", False

    with pytest.raises(InputError, match="timestamp-query feature, which some adapter lacks"):
        with profile(NoTimestamps()):
            pass
    assert device.runtime.profiler is None


def test_a_dispatch_recorded_after_a_flush_keeps_its_inputs_from_uploads(timed_device, monkeypatch):
    """The profile's full query set flushes before a dispatch: the dispatch's inputs must be marked as read by the
    submit it lands in, or a tensor dropped right after could hand its buffer to an upload that lands first."""
    monkeypatch.setattr(profiler, "QUERY_PAIRS", 2)
    with profile(timed_device):
        ops.affine(Tensor.from_numpy(np.ones(4, np.float32), timed_device), 1.0, 0.0)
        ops.affine(Tensor.from_numpy(np.ones(4, np.float32), timed_device), 1.0, 0.0)
        source = Tensor.from_numpy(np.arange(4, dtype=np.float32), timed_device)
        doubled = ops.affine(source, 2.0, 0.0)  # recorded into the next submit
        del source
        overwrite = Tensor.from_numpy(np.full(4, 1000.0, np.float32), timed_device)
        np.testing.assert_array_equal(doubled.numpy(), [0.0, 2.0, 4.0, 6.0])
        del overwrite


def test_autotuning_inside_a_profile_is_left_out_of_it(timed_device, rng):
    from wgrpo.engine.autotune import Autotuner
    from tests.engine.test_autotune import _problem

    x = Tensor.from_numpy(np.ones(8, np.float32), timed_device)
    with profile(timed_device) as p:
        ops.silu(x)
        Autotuner(timed_device, path=None, shipped={}).tune(_problem(timed_device, rng), save=False)
        ops.silu(x)
    assert p.calls == 2 and [row["kernel"] for row in p.rows()] == ["elementwise.silu_naive"]


def test_a_replayed_step_as_long_as_a_submit_fits_the_profile(timed_device):
    x = Tensor.from_numpy(np.ones(4, np.float32), timed_device)
    runtime = timed_device.runtime
    with profile(timed_device) as p:
        for _ in range(profiler.PAIRS_PER_SET + 5):  # over one query set: the second one is used
            ops.affine(x, 1.0, 0.0)
    assert p.calls == profiler.PAIRS_PER_SET + 5 and runtime.profiler is None
