"""engine.autotune: candidates checked against the spec and timed, the fastest correct one kept per adapter in the
cache file and reused, the shipped table's coarse classes, tuning switched off, and a damaged cache ignored."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest

from wgrpo.engine import InputError, Tensor, ops
from wgrpo.engine.autotune import (AUTOTUNE_VAR, CACHE_DIR_VAR, CACHE_FILE, Autotuner, Candidate, Problem,
                                   adapter_key, cache_dir, fallbacks, size_bucket)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_VAR, str(tmp_path))
    return tmp_path / CACHE_FILE


def _problem(device, rng, shape_class="NN|f32/f32|a4|m32|n64|k16"):
    a = rng.standard_normal((29, 16)).astype(np.float32)
    b = rng.standard_normal((16, 61)).astype(np.float32)
    ta, tb = Tensor.from_numpy(a, device), Tensor.from_numpy(b, device)
    wrong = Tensor.from_numpy(b[::-1].copy(), device)
    candidates = [Candidate("naive", lambda: ops.matmul(ta, tb, variant="naive")),
                  Candidate("reg8x4", lambda: ops.matmul(ta, tb, variant="reg8x4")),
                  Candidate("wrong", lambda: ops.matmul(ta, wrong, variant="reg8x4"))]  # a real kernel, wrong result
    return Problem("matmul", shape_class, candidates, lambda: a.astype(np.float64) @ b, default="naive")


def test_classes_round_up_and_fall_back_to_coarser_ones():
    assert [size_bucket(n) for n in (1, 2, 3, 8, 9, 1000)] == [1, 2, 4, 8, 16, 1024]
    assert fallbacks("NT|f32/f32|m8|n512") == ["NT|f32/f32|m8|n512", "NT|f32/f32|m8", "NT|f32/f32", "NT", "*"]


def test_the_cache_lives_in_the_user_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_DIR_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "wgrpo"


def test_the_fastest_correct_candidate_is_kept_and_reused(device, rng, cache):
    tuner = Autotuner(device, shipped={})
    result = tuner.tune(_problem(device, rng))
    by_name = {t.name: t for t in result.trials}
    assert by_name["wrong"].seconds is None and "differs from the reference" in by_name["wrong"].problem
    timed = [t for t in result.trials if t.seconds is not None]
    assert {t.name for t in timed} == {"naive", "reg8x4"} and all(t.seconds > 0 for t in timed)
    assert result.winner == min(timed, key=lambda t: t.seconds).name
    saved = json.loads(cache.read_text())
    assert saved["adapters"][adapter_key(device)]["matmul"]["NN|f32/f32|a4|m32|n64|k16"] == result.winner
    again = Autotuner(device, shipped={})  # a later run reads the cache and tunes nothing
    built = []
    chosen = again.choose(lambda: built.append(1) or _problem(device, rng), "matmul", "NN|f32/f32|a4|m32|n64|k16", "x")
    assert chosen == result.winner and again.tunings == 0 and not built


def test_an_unseen_class_is_tuned_at_first_use_once(device, rng, cache):
    tuner = Autotuner(device, shipped={})
    first = tuner.choose(lambda: _problem(device, rng), "matmul", "NN|f32/f32|a4|m32|n64|k16", "naive")
    assert first in ("naive", "reg8x4") and tuner.tunings == 1
    assert tuner.choose(lambda: pytest.fail("tuned twice"), "matmul", "NN|f32/f32|a4|m32|n64|k16", "naive") == first


def test_other_adapters_entries_are_kept_and_not_used(device, rng, cache):
    cache.write_text(json.dumps({"format": 1, "adapters": {"Other GPU | Vulkan | 1.0 | wgpu 0": {
        "matmul": {"NN|f32/f32|a4|m32|n64|k16": "naive"}}}}))
    tuner = Autotuner(device, shipped={})
    assert tuner.lookup("matmul", "NN|f32/f32|a4|m32|n64|k16") is None
    tuner.tune(_problem(device, rng))
    adapters = json.loads(cache.read_text())["adapters"]
    assert set(adapters) == {"Other GPU | Vulkan | 1.0 | wgpu 0", adapter_key(device)}


def test_the_shipped_table_answers_coarse_classes_and_measurements_win(device, rng, cache):
    tuner = Autotuner(device, shipped={"matmul": {"*": "naive", "NT|f32/f32|m8": "reg8x4"}})
    assert tuner.lookup("matmul", "NT|f32/f32|m8|n512|k64") == "reg8x4"
    assert tuner.lookup("matmul", "NN|f32/f32|m64|n512|k64") == "naive"
    tuner.measured["matmul"] = {"NT|f32/f32|m8|n512|k64": "naive"}
    assert tuner.lookup("matmul", "NT|f32/f32|m8|n512|k64") == "naive"


def test_tuning_off_uses_the_default(device, rng, cache, monkeypatch):
    monkeypatch.setenv(AUTOTUNE_VAR, "0")
    tuner = Autotuner(device, shipped={})
    assert tuner.choose(lambda: pytest.fail("tuned"), "matmul", "NN|f32/f32|a4|m32|n64|k16", "naive") == "naive"
    assert not cache.exists()


def test_a_damaged_cache_is_ignored_with_a_warning_and_rewritten(device, rng, cache, capsys):
    cache.write_text("{not json")
    tuner = Autotuner(device, shipped={})
    assert "ignoring the autotuning cache" in capsys.readouterr().err
    tuner.tune(_problem(device, rng))
    assert json.loads(cache.read_text())["format"] == 1


def test_no_correct_candidate_is_an_error_naming_them(device, rng, cache):
    problem = _problem(device, rng)
    problem.candidates = [c for c in problem.candidates if c.name == "wrong"]
    with pytest.raises(RuntimeError, match="no candidate passed its check .*wrong: ValueError"):
        Autotuner(device, shipped={}).tune(problem)


def test_attention_is_tuned_per_class_with_every_variant_and_tile_size_checked(device, cache):
    from wgrpo.engine.ops.attention import choose_variant, eligible_variants, tile_choices, tiled_name
    from wgrpo.engine.ops.attention_tuning import shape_class, tuning_problem

    q_shape, k_shape = (2, 37, 4, 16), (2, 37, 2, 16)
    assert shape_class(q_shape, k_shape, "f32", True) == "f32|q64|k64|d16|g2|c1"
    tuner = Autotuner(device, shipped={})
    result = tuner.tune(tuning_problem(device, q_shape, k_shape, "f32", True, "serial"))
    tiled = {tiled_name(t) for t in tile_choices(device, 16)}
    assert len(tiled) >= 2 and {t.name for t in result.trials} == (set(eligible_variants(device)) - {"tiled"}) | tiled
    assert all(t.seconds is not None for t in result.trials), [t.problem for t in result.trials]
    assert result.winner in {t.name for t in result.trials}
    assert choose_variant(device, q_shape, k_shape) == result.winner  # remembered: what the op runs


def test_a_remembered_tile_size_runs_and_one_that_does_not_fit_falls_back(device, cache):
    import importlib

    from wgrpo.engine.ops.attention import Tiles, attention_forward, tile_choices, tiled_name, usable_variant
    from wgrpo.engine.ops.attention_tuning import shape_class

    small = tile_choices(device, 16)[-1]
    name = tiled_name(small)
    assert usable_variant(device, name, 16) == name
    assert usable_variant(device, "tiled:4096x4096", 16) == "tiled"  # tiles past the adapter: its own choice
    assert usable_variant(device, "tiled:4x", 16) is None and usable_variant(device, "flash", 16) is None
    q_shape, k_shape = (1, 21, 4, 16), (1, 21, 2, 16)
    tuner = Autotuner(device, shipped={"attention": {shape_class(q_shape, k_shape, "f32", True): name}})
    rng = np.random.default_rng(0)
    q, k, v = (Tensor.from_numpy(rng.standard_normal(shape).astype(np.float32), device)
               for shape in (q_shape, k_shape, k_shape))
    seen = []
    attention_module = importlib.import_module("wgrpo.engine.ops.attention")  # the module, not the op it exports
    original = attention_module._dispatch
    with mock.patch("wgrpo.engine.ops.attention_tuning.autotuner", lambda _: tuner), \
            mock.patch.object(attention_module, "_dispatch",
                              lambda op, variant, tiles, *rest: seen.append((op, variant, tiles)) or
                              original(op, variant, tiles, *rest)):
        out = ops.attention(q, k, v).numpy()
    assert seen == [("forward", "tiled", Tiles(small.bq, small.bk, small.lanes))]
    expected, _ = attention_forward(q, k, v, True, 0.25, "serial")
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match=r"variant 'tiled:8x8' names other tiles than tiles=Tiles\(bq=4"):
        ops.attention(q, k, v, variant="tiled:8x8", tiles=Tiles(4, 4))


def test_on_lavapipe_the_shipped_table_answers_without_tuning(device, cache):
    from wgrpo.engine.autotune_tables import is_lavapipe
    from wgrpo.engine.ops.attention import choose_variant

    if not is_lavapipe(device):
        pytest.skip("the shipped table covers lavapipe")
    tuner = Autotuner(device)
    assert tuner.lookup("attention", "f32|q4096|k4096|d128|g8|c1") == "subgroup"
    assert tuner.lookup("matmul", "NT|f32/f32|a4|m8|n512|k128") == "cpu_nt8x8"
    assert tuner.lookup("matmul", "TN|f32/bf16|a4|m512|n512|k1024") == "cpu_tn64x4"
    assert tuner.lookup("matmul", "NN|f32/f32|a1|m512|n512|k1024") == "sg32x4"
    assert choose_variant(device, (1, 300, 4, 32), (1, 300, 2, 32)) == "subgroup"
    assert not cache.exists()


def test_results_measured_on_other_kernels_are_not_used_and_are_replaced(device, rng, cache):
    here = adapter_key(device)
    assert " | kernels " in here
    stale = here.split(" | kernels ")[0] + " | kernels 000000000000"
    cache.write_text(json.dumps({"format": 1, "adapters": {stale: {"matmul": {"NN|f32/f32|a4|m32|n64|k16": "naive"}},
                                                           "Other GPU | Vulkan | 1.0 | wgpu 0 | kernels 1": {}}}))
    tuner = Autotuner(device, shipped={})
    assert tuner.lookup("matmul", "NN|f32/f32|a4|m32|n64|k16") is None
    tuner.tune(_problem(device, rng))
    assert set(json.loads(cache.read_text())["adapters"]) == {"Other GPU | Vulkan | 1.0 | wgpu 0 | kernels 1", here}


def test_the_lavapipe_table_sends_tall_nn_products_to_the_strip_sharing_kernel(device, cache):
    from wgrpo.engine.autotune_tables import LAVAPIPE

    tuner = Autotuner(device, shipped=LAVAPIPE)
    assert tuner.lookup("matmul", "NN|f32/f32|a4|m128|n1024|k65536") == "cpu_nn128x4"
    assert tuner.lookup("matmul", "NN|f32/f32|a4|m64|n1024|k4096") == "cpu_nn128x4"
    assert tuner.lookup("matmul", "NN|f32/f32|a4|m32|n1024|k4096") == "cpu_nn32x4"
    assert tuner.lookup("matmul", "NN|f32/f32|a4|m2048|n1024|k4096") == "cpu_nn64x4"
    assert tuner.lookup("matmul", "NN|f16/f16|a4|m128|n1024|k4096") == "cpu_nn64x4"
    assert tuner.lookup("matmul", "NT|f16/f16|a4|m64|n1024|k4096") == "cpu_nt32x4"


def test_matmul_cpu_is_refused_on_hardware_adapters(device):
    from types import SimpleNamespace

    from wgrpo.engine.ops.matmul_variants import VARIANTS, Problem

    gpu = SimpleNamespace(name="a GPU", is_software=False, has_subgroups=True, has_f16=True, limits={})
    problem = Problem(m=64, n=64, k=64)
    assert "made for CPU adapters, a GPU is not one" in VARIANTS["cpu_nn32x4"].refusal(gpu, problem)
    assert VARIANTS["sg32x4"].refusal(gpu, problem) is None
