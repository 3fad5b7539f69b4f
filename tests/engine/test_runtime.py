"""The runtime: one submit per step, caches, pool reuse, hazards and error messages."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import KernelError, Tensor, ops
from wgrpo.kernels import ParamsError
from wgrpo.engine.pool import size_class


def test_200_dispatches_cost_one_submit(device):
    runtime = device.runtime
    runtime.flush()
    x = Tensor.from_numpy(np.ones(37, np.float32), device)
    before = runtime.stats.submits, runtime.stats.dispatches
    for _ in range(200):
        x = ops.affine(x, 1.0, 1.0)
    assert runtime.stats.submits == before[0], "recording must not submit"
    result = x.numpy()
    assert runtime.stats.submits == before[0] + 1
    assert runtime.stats.dispatches == before[1] + 200
    np.testing.assert_array_equal(result, np.full(37, 201, np.float32))


def test_pipelines_are_built_once(device):
    x = Tensor.from_numpy(np.ones(5, np.float32), device)
    ops.silu(x)
    built = device.runtime.stats.pipelines
    for _ in range(3):
        ops.silu(x)
    assert device.runtime.stats.pipelines == built


def test_pool_reuses_freed_buffers(device):
    runtime = device.runtime
    Tensor.empty((1000,), np.float32, device)  # freed at once
    created = runtime.stats.buffers_created
    for _ in range(5):
        Tensor.empty((1000,), np.float32, device)
    assert runtime.stats.buffers_created == created


def test_the_pool_hands_a_repeated_sequence_the_same_buffers(device):
    def blocks_of_one_round():
        first, second = Tensor.empty((700,), np.float32, device), Tensor.empty((700,), np.float32, device)
        blocks = first.binding()[0], second.binding()[0]
        del first, second  # freed in the order they were made
        return blocks

    blocks_of_one_round()
    assert blocks_of_one_round() == blocks_of_one_round()


def test_a_repeated_training_step_builds_no_bind_group(device):
    from wgrpo.engine import AdamW, Model, ModelConfig

    config = ModelConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                         intermediate_size=48, max_position_embeddings=16)
    model = Model.random(config, seed=0, device=device).requires_grad_()
    optimizer = AdamW(model.parameters(), lr=1e-3)
    ids = np.random.default_rng(0).integers(0, 40, (3, 9))
    targets = Tensor.from_numpy(ids[:, 1:].astype(np.int32), device)

    def step():
        optimizer.zero_grad()
        loss = ops.cross_entropy(model(ids[:, :-1]), targets)
        loss.backward()
        optimizer.step()
        return float(loss.numpy())

    step(), step()
    created = device.runtime.stats.bind_groups_created
    step()
    assert device.runtime.stats.bind_groups_created == created


def test_tensors_collected_in_a_reference_cycle_leave_the_pool_usable(device, rng):
    import gc

    class Holder:  # a cycle, as a traceback's frames make one around a failed step's tensors
        pass

    gc.collect()
    holder = Holder()
    holder.self = holder
    holder.tensors = [Tensor.from_numpy(rng.standard_normal((64, 36)).astype(np.float32), device)
                      for _ in range(8)]
    del holder
    gc.collect()  # the tensors' blocks go back to the pool; their buffers must stay alive
    a = rng.standard_normal((64, 36)).astype(np.float32)
    ta = Tensor.from_numpy(a, device)
    np.testing.assert_allclose(ops.scale(ta, 2.0).numpy(), 2 * a, rtol=1e-6)


def test_size_classes_are_close_fits():
    for n in [1, 255, 256, 257, 1000, 4096, 10_000, 1_000_003, 50_000_000]:
        size = size_class(n)
        assert size >= n and size % 256 == 0
        assert size <= max(256, n * 1.2 + 256)


def test_upload_never_overwrites_data_a_pending_dispatch_reads(device):
    a = np.arange(1000, dtype=np.float32)
    x = Tensor.from_numpy(a, device)
    y = ops.affine(x, 2.0)  # recorded, not yet run
    del x  # its buffer goes back to the pool while the dispatch still reads it
    z = Tensor.from_numpy(np.full(1000, -7, np.float32), device)
    np.testing.assert_array_equal(y.numpy(), 2 * a)
    np.testing.assert_array_equal(z.numpy(), np.full(1000, -7, np.float32))


def test_a_host_write_lands_after_the_commands_recorded_before_it(device, monkeypatch):
    import wgrpo.engine.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "WRITE_STAGING_BYTES", 8)  # a submit after every second write
    a = np.arange(12, dtype=np.float32)
    x = Tensor.from_numpy(a, device)
    y = ops.affine(x, 2.0)  # recorded, reads x's old values
    block, offset, _ = x.binding()
    new = np.full(4, -1.0, np.float32)
    submits = device.runtime.stats.submits
    device.runtime.write(block, offset + 8, memoryview(new).cast("B"))  # elements 2..5 (after y's submit)
    assert device.runtime.stats.submits == submits + 2  # y's commands first, then the staged 16 bytes
    device.runtime.write(block, offset + 40, memoryview(new[:2]).cast("B"))  # elements 10..11
    device.runtime.write(block, offset, b"")  # nothing to write
    np.testing.assert_array_equal(y.numpy(), 2 * a)
    np.testing.assert_array_equal(x.numpy(), np.r_[a[:2], new, a[6:10], new[:2]])
    with pytest.raises(ValueError, match="offset 2 and size 4 must be multiples of 4 bytes"):
        device.runtime.write(block, 2, b"1234")


def test_reshape_shares_data(device, rng):
    a = rng.standard_normal((6, 4)).astype(np.float32)
    t = Tensor.from_numpy(a, device)
    np.testing.assert_array_equal(t.reshape(3, -1).numpy(), a.reshape(3, 8))
    with pytest.raises(ValueError, match=r"\(6, 4\) has 24 elements"):
        t.reshape(5, 5)


def test_wrong_buffer_count_names_the_kernel(device):
    x = Tensor.from_numpy(np.ones(4, np.float32), device)
    with pytest.raises(KernelError, match=r"elementwise\.silu_naive.*binds \['x', 'y'\]"):
        device.runtime.dispatch("elementwise", "silu_naive", [x], (1,))


def test_unknown_entry_names_the_family(device):
    with pytest.raises(ValueError, match="no entry point 'nope'"):
        device.runtime.pipeline("elementwise", "nope")


def test_tensor_over_the_binding_limit_is_refused_with_the_limit(device):
    elements = device.max_binding_bytes // 4 + 1
    with pytest.raises(ValueError, match=r"max_storage_buffer_binding_size of \d+ bytes"):
        Tensor.empty((elements,), np.float32, device)


def test_grid_over_the_workgroup_limit_is_refused(device):
    x = Tensor.from_numpy(np.ones(4, np.float32), device)
    with pytest.raises(ValueError, match="workgroups per dimension"):
        device.runtime.dispatch("elementwise", "silu_naive", [x, x], (10**6,), {"n": 4, "alpha": 0.0, "beta": 0.0})


def test_wgpu_shader_errors_name_the_kernel(device, monkeypatch):
    from wgrpo import kernels
    from wgrpo.kernels.registry import parse

    broken = parse("broken", "f32", "@compute @workgroup_size(1) fn oops_naive() { let x: u32 = 1.5; }")
    monkeypatch.setattr(kernels, "load", lambda family, elem="f32", subgroups=True, weights="elem", wide_reads=False: broken)
    with pytest.raises(KernelError, match=r"building broken\.oops_naive \(f32"):
        device.runtime.pipeline("broken", "oops_naive")


def test_params_are_packed_by_name(device, rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    t, y = Tensor.from_numpy(x, device), Tensor.empty((15,), np.float32, device)
    device.runtime.dispatch("elementwise", "affine_naive", [t, y], (1,), {"beta": 1.0, "n": 15, "alpha": -2.0})
    np.testing.assert_allclose(y.numpy(), -2.0 * x.reshape(-1) + 1.0, rtol=1e-6)


def test_params_mismatch_names_the_kernel_the_entry_and_the_field(device):
    x = Tensor.from_numpy(np.ones(4, np.float32), device)
    dispatch = device.runtime.dispatch
    with pytest.raises(ParamsError, match=r"elementwise\.silu_naive: params lack field\(s\) \['alpha', 'beta'\]"):
        dispatch("elementwise", "silu_naive", [x, x], (1,), {"n": 4})
    with pytest.raises(ParamsError, match=r"elementwise\.silu_naive: struct MapParams .* has no field\(s\) \['rank'\]"):
        dispatch("elementwise", "silu_naive", [x, x], (1,), {"n": 4, "alpha": 0.0, "beta": 0.0, "rank": 1})
    with pytest.raises(ParamsError, match=r"elementwise\.silu_naive: params field 'n' \(u32\) needs an integer"):
        dispatch("elementwise", "silu_naive", [x, x], (1,), {"n": 4.0, "alpha": 0.0, "beta": 0.0})
    with pytest.raises(ParamsError, match=r"elementwise\.silu_naive: params must be a mapping of field names"):
        dispatch("elementwise", "silu_naive", [x, x], (1,), b"\x04\x00\x00\x00")
    with pytest.raises(ParamsError, match=r"params lack field"):
        dispatch("elementwise", "silu_naive", [x, x], (0,))  # checked even when there is nothing to compute


def test_params_for_an_entry_without_a_uniform_are_refused(device, monkeypatch):
    from wgrpo import kernels
    from wgrpo.kernels.registry import parse

    plain = parse("plain", "f32", "@group(0) @binding(1) var<storage, read_write> out: array<u32>;\n"
                                  "@compute @workgroup_size(1) fn fill_naive() { out[0] = 7u; }")
    monkeypatch.setattr(kernels, "load", lambda family, elem="f32", subgroups=True, weights="elem", wide_reads=False: plain)
    out = Tensor.empty((1,), np.uint32, device)
    with pytest.raises(KernelError, match=r"plain\.fill_naive binds no uniform Params struct, but got params \['n'\]"):
        device.runtime.dispatch("plain", "fill_naive", [out], (1,), {"n": 1})
    device.runtime.dispatch("plain", "fill_naive", [out], (1,))
    assert out.numpy()[0] == 7


def test_a_timed_pass_refuses_to_end_early(device):
    if not device.has_timestamps:
        pytest.skip("adapter lacks timestamp queries")
    queries = device.wgpu.create_query_set(type="timestamp", count=2)
    x = Tensor.from_numpy(np.ones(8, np.float32), device)
    y = Tensor.empty((8,), np.float32, device)
    with pytest.raises(KernelError, match="timed pass would end early"):
        with device.runtime.timed_pass(queries, 0, 1):
            ops.silu(x)
            device.runtime.copy(x, y)
    np.testing.assert_allclose(ops.silu(x).numpy(), np.ones(8) / (1 + np.exp(-1)), rtol=1e-6)  # still usable


def test_trim_gives_the_free_buffers_back(device):
    from wgrpo.engine import Tensor

    runtime = device.runtime
    kept = Tensor.from_numpy(np.arange(3000, dtype=np.float32), device)
    dropped = [Tensor.empty((5000 + i,), np.float32, device) for i in range(3)]
    held = runtime.pool.bytes_held
    del dropped
    freed = runtime.trim()
    assert freed >= 3 * 5000 * 4 and runtime.pool.bytes_held == held - freed
    assert np.array_equal(kept.numpy(), np.arange(3000, dtype=np.float32))  # tensors in use are untouched
    assert np.array_equal((kept + kept).numpy(), 2 * np.arange(3000, dtype=np.float32))
