"""What a hardware adapter runs, run on lavapipe: a second device on the test adapter that says it is a discrete GPU
takes every GPU branch of the engine (no matmul_cpu entries and 32-bit reads, one quad per invocation in the vec4
kernels, the workgroup sampler, 16 decode steps per submit, GPU work-group sizes in the optimizer and the norms, and
no shipped table: each shape class is tuned at first use among the GPU variants and cached) and must compute what
the CPU adapter computes. CI has no GPU; this keeps those branches exercised."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wgrpo.engine import AdamW, Model, ModelConfig, Tensor, generate, ops
from wgrpo.engine.autotune import CACHE_DIR_VAR, CACHE_FILE, Autotuner, autotuner
from wgrpo.engine.device import Device
from wgrpo.engine.generate import STEPS_PER_SUBMIT, default_steps_per_submit
from wgrpo.engine.ops.matmul_variants import eligible_variants
from wgrpo.engine.optim import clip_grad_norm_
from wgrpo.engine.sampling import sample_variant

# awkward sizes: a prime vocabulary, a sequence that fills no tile, GQA
CONFIG = ModelConfig(vocab_size=97, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                     intermediate_size=160, max_position_embeddings=128)


@pytest.fixture(scope="module")
def gpu(device, tmp_path_factory):
    """The test adapter as a discrete GPU, its tuning results kept in a cache file of its own."""
    shaped = Device(dataclasses.replace(device.summary, adapter_type="DiscreteGPU"))
    cache = tmp_path_factory.mktemp("gpu-paths-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_DIR_VAR, str(cache))
        autotuner(shaped)  # made now, so it reads and writes that file
    return shaped


def _ids(batch=3, length=38, seed=0):
    return np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (batch, length))


def _training_step(device):
    """Loss, gradients and the weights after one clipped AdamW step on `device`."""
    model = Model.random(CONFIG, seed=0, device=device).requires_grad_()
    ids = _ids()
    targets = Tensor.from_numpy(ids[:, 1:].astype(np.int32), device)
    loss = ops.cross_entropy(model(ids[:, :-1]), targets)
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters().items()}
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    clip_grad_norm_(model.parameters(), 0.5)
    optimizer.step()
    return float(loss.numpy()), grads, model.state_dict()


def test_the_gpu_shaped_device_takes_the_gpu_branches(gpu, device):
    assert not gpu.is_software and not gpu.wide_reads
    assert sample_variant(gpu) == "workgroup"
    assert default_steps_per_submit(gpu) == STEPS_PER_SUBMIT["gpu"] != default_steps_per_submit(device)
    gpu_variants = eligible_variants(gpu, 64, 64, 64)
    assert gpu_variants and not any(name.startswith("cpu_") for name in gpu_variants)
    assert any(name.startswith("cpu_") for name in eligible_variants(device, 64, 64, 64))
    assert autotuner(gpu).shipped == {}


def test_a_training_step_on_the_gpu_paths_matches_the_cpu_adapter(gpu, device):
    loss, grads, weights = _training_step(gpu)
    cpu_loss, cpu_grads, cpu_weights = _training_step(device)
    assert loss == pytest.approx(cpu_loss, rel=1e-5)
    for name, grad in cpu_grads.items():
        np.testing.assert_allclose(grads[name], grad, rtol=1e-4, atol=1e-6, err_msg=name)
    for name, w in cpu_weights.items():
        np.testing.assert_allclose(weights[name], w, rtol=1e-5, atol=1e-6, err_msg=name)
    moved = max(np.abs(weights[name] - w).max() for name, w in Model.random(CONFIG, seed=0).state_dict().items())
    assert moved > 1e-4  # the step changed the weights: the comparison above is not of two untouched models


def test_every_class_was_tuned_among_gpu_variants_and_is_reused(gpu):
    tuner = autotuner(gpu)
    matmuls = tuner.measured.get("matmul", {})
    assert matmuls, "no matmul class was tuned on the GPU-shaped device"
    assert not any(name.startswith("cpu_") for name in matmuls.values())
    assert tuner.path.is_file() and tuner.path.name == CACHE_FILE
    again = Autotuner(gpu, path=tuner.path)  # a later run on the same adapter
    assert again.measured == tuner.measured
    for shape_class, name in matmuls.items():
        assert again.choose(lambda: pytest.fail("tuned again"), "matmul", shape_class, "naive") == name


def test_generation_on_the_gpu_paths_matches_the_cpu_adapter(gpu, device):
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]

    def sample(dev, **options):
        model = Model.random(CONFIG, seed=1, device=dev)
        result = generate(model, prompts, max_new_tokens=21, seed=3, num_samples=2, **options)
        return [s.token_ids.tolist() for s in result.sequences], [s.logprobs for s in result.sequences]

    for options in ({"temperature": 0.0}, {"temperature": 1.0, "top_p": 0.9}, {"temperature": 0.7, "top_k": 5}):
        tokens, logprobs = sample(gpu, **options)
        cpu_tokens, cpu_logprobs = sample(device, **options)
        assert tokens == cpu_tokens, options
        for got, want in zip(logprobs, cpu_logprobs):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_scored_positions_and_bf16_weights_on_the_gpu_paths_match_the_cpu_adapter(gpu, device):
    ids = _ids(batch=4, length=30, seed=2)
    positions = np.array([3, 4, 5, 28, 29, 60, 61, 62, 63, 64, 100, 115])  # of 4 x 29

    def score(dev, dtype=None):
        model = Model.random(CONFIG, seed=4, device=dev, dtype=dtype)
        scored = model.token_logprobs(ids[:, :-1], ids[:, 1:].astype(np.int32), positions=positions).numpy()
        return scored, float(ops.cross_entropy(model(ids[:, :-1]),
                                               Tensor.from_numpy(ids[:, 1:].astype(np.int32), dev)).numpy())

    for dtype in (None, "bfloat16"):
        (scored, loss), (cpu_scored, cpu_loss) = score(gpu, dtype), score(device, dtype)
        np.testing.assert_allclose(scored, cpu_scored, rtol=1e-5, atol=1e-5, err_msg=str(dtype))
        assert loss == pytest.approx(cpu_loss, rel=1e-5)
        assert np.count_nonzero(scored) == len(positions)
