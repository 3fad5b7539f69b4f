"""The device-memory estimates against the runtime's own counters, the device budget and the refusal.

Tolerances: weights, gradients, optimizer moments and the KV cache are estimated exactly (every tensor of those
kinds is replayed, rounded to its pool size class); activations and the total within 0.5% (the backward's
gradients in flight are replayed node by node, a little early or late where autograd's loop frees them)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from wgrpo.engine import AdamW, InputError, Model, ModelConfig, Tensor, clip_grad_norm_, generate, no_grad, ops
from wgrpo.engine.memory import KINDS, memory_kind
from wgrpo.engine.memory_budget import (MEMORY_VAR, MemoryBudget, check_fits, device_memory_budget,
                                        host_memory_available, parse_memory)
from wgrpo.engine.memory_estimate import (MemoryEstimate, estimate_generation, estimate_grpo_step, format_bytes,
                                          peak_metrics, tensor_bytes)

EXACT = ("weights", "gradients", "optimizer", "kv_cache")
CLOSE = 0.005
SMALL = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192,
                    max_position_embeddings=128)
# under a 256 KiB binding limit its embedding and head are held in two row blocks, and the LM head runs in two
TIED = ModelConfig(vocab_size=1024, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256,
                   max_position_embeddings=128, tie_word_embeddings=True)
QWEN3 = ModelConfig(architecture="qwen3", vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1,
                    intermediate_size=96, max_position_embeddings=64)


def in_use(memory) -> dict:
    """Bytes in use by kind now, once tensors that earlier tests dropped in reference cycles are collected."""
    gc.collect()
    return dict(memory.current)


def measured_peaks(memory, base: dict) -> dict:
    """The counters' peaks since `reset_peak`, less what was in use before the test built anything."""
    peaks = {kind: memory.peak[kind] - base[kind] for kind in KINDS}
    return {**peaks, "total": memory.peak_total - sum(base.values())}


def assert_matches(estimate: MemoryEstimate, measured: dict) -> None:
    for kind in EXACT:
        assert estimate.peak[kind] == measured[kind], (kind, estimate.peak, measured)
    for kind, value in (("activations", estimate.peak["activations"]), ("total", estimate.total)):
        assert value == pytest.approx(measured[kind], rel=CLOSE), (kind, estimate.peak, measured)


def random_model(config, seed, device, dtype=None):
    with memory_kind("weights"):  # RoPE's inv_freq too
        return Model.random(config, seed=seed, device=device, dtype=dtype)


def prompts(config, batch, length, seed=0):
    return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, length)).tolist()


# ---------------------------------------------------------------------------------------------- sizes


def test_tensor_bytes_are_what_the_pool_hands_out(device, monkeypatch):
    memory = device.runtime.memory
    monkeypatch.setattr(device, "_binding_bytes", 4096)
    for shape, dtype in (((), np.float32), ((3,), np.int32), ((1000,), np.float32), ((70, 9), np.float32),
                         ((131, 11), np.float32), ((131, 11), np.float16), ((5, 3, 7), np.float32)):
        before = memory.current["activations"]
        tensor = Tensor.empty(shape, dtype, device)
        assert memory.current["activations"] - before == tensor_bytes(shape, dtype, 4096), (shape, tensor)
        del tensor
    assert tensor_bytes((131, 11), np.float32, 4096) == 4096 + 1792  # blocks of 93 and 38 rows
    assert tensor_bytes((1000,), np.float32) == 4096 and tensor_bytes((1025,), np.float32) == 4096 + 512


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 512, 1536, 47_841_280, 1 << 30, int(1.234 * (1 << 30)), 200 << 40)] == \
        ["0 B", "512 B", "1.50 KiB", "45.6 MiB", "1.00 GiB", "1.23 GiB", "200 TiB"]


# ---------------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("config,dtype,batch,samples", [(SMALL, "float32", 3, 4), (SMALL, "bfloat16", 2, 1),
                                                         (QWEN3, "float32", 1, 3)])
def test_generation_estimate_matches_the_counters(device, config, dtype, batch, samples):
    memory = device.runtime.memory
    base = in_use(memory)
    memory.reset_peak()
    model = random_model(config, 0, device, dtype)
    generate(model, prompts(config, batch, 11), max_new_tokens=9, num_samples=samples, eos_token_ids=(), seed=1)
    estimate = estimate_generation(config, dtype, batch, 11, 9, num_samples=samples, early_stops=False,
                                   max_binding_bytes=device.max_binding_bytes)
    assert_matches(estimate, measured_peaks(memory, base))
    assert estimate.peak["gradients"] == estimate.peak["optimizer"] == 0


def test_early_stops_bound_the_cache_of_the_live_rows(device):
    memory = device.runtime.memory
    model = random_model(SMALL, 0, device)
    base = in_use(memory)
    memory.reset_peak()
    # a tenth of the vocabulary ends a completion: some end within the first read-back, most run on
    result = generate(model, prompts(SMALL, 2, 6), max_new_tokens=40, num_samples=6, seed=3, eos_token_ids=range(12),
                      steps_per_submit=4)
    assert len(set(result.stats["batch_per_chunk"])) > 1  # rows were gathered into a smaller cache
    kv_cache = measured_peaks(memory, base)["kv_cache"]
    kwargs = dict(num_samples=6, max_binding_bytes=device.max_binding_bytes)
    full_length = estimate_generation(SMALL, "float32", 2, 6, 40, early_stops=False, **kwargs)
    worst = estimate_generation(SMALL, "float32", 2, 6, 40, **kwargs)
    assert full_length.peak["kv_cache"] < kv_cache <= worst.peak["kv_cache"]


# ---------------------------------------------------------------------------------------------- a GRPO step


def grpo_step(model, reference, optimizer, prompt_ids, group: int, new_tokens: int, mu: int, clip: bool,
              eval_batch: int):
    """Sample (and evaluate greedily), then update as `GRPOTrainer.update` does (targets, mask, old log-probs and
    advantages on the device, the reference's log-probs without a graph, mu policy updates)."""
    device = model.device
    result = generate(model, prompt_ids, max_new_tokens=new_tokens, num_samples=group, eos_token_ids=(), seed=1)
    if eval_batch:
        generate(model, prompts(model.config, eval_batch, len(prompt_ids[0]), seed=5), max_new_tokens=new_tokens,
                 temperature=0.0, eos_token_ids=())
    tokens = np.array([s.prompt_ids + s.token_ids.tolist() for s in result.sequences], np.int32)
    inputs, rows = tokens[:, :-1], len(tokens)
    targets = Tensor.from_numpy(tokens[:, 1:], device)
    mask = np.zeros(inputs.shape, np.float32)
    mask[:, len(prompt_ids[0]) - 1:] = 1.0
    mask, old_logp = Tensor.from_numpy(mask, device), Tensor.from_numpy(np.zeros(inputs.shape, np.float32), device)
    advantages = Tensor.from_numpy(np.random.default_rng(0).standard_normal(rows).astype(np.float32), device)
    ref_logp = None
    if reference is not None:
        with no_grad():
            ref_logp = reference.token_logprobs(inputs, targets)
    for _ in range(mu):
        logp = model.token_logprobs(inputs, targets)
        loss = ops.grpo_loss(logp, old_logp, ref_logp, advantages, mask, beta=0.04 if reference else 0.0)
        loss.backward()
        if clip:
            clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        loss.numpy()


@pytest.mark.parametrize("config,reference_dtype,mu,clip,limit,eval_batch", [
    (SMALL, "float32", 1, True, None, 0),
    (TIED, "bfloat16", 2, True, 256 << 10, 0),
    (QWEN3, None, 1, False, None, 12),  # the evaluation's cache of 12 rows is the largest
])
def test_grpo_step_estimate_matches_the_counters(device, monkeypatch, config, reference_dtype, mu, clip, limit,
                                                 eval_batch):
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
    memory = device.runtime.memory
    base = in_use(memory)
    model = random_model(config, 0, device)
    reference = random_model(config, 1, device, reference_dtype) if reference_dtype else None
    model.requires_grad_()
    optimizer = AdamW(model.parameters(), lr=1e-3)
    batch, group, prompt_tokens, new_tokens = 2, 3, 9, 12
    prompt_ids = prompts(config, batch, prompt_tokens)
    step = (model, reference, optimizer, prompt_ids, group, new_tokens, mu, clip, eval_batch)
    grpo_step(*step)  # AdamW's moments exist from now on
    memory.reset_peak()
    grpo_step(*step)
    estimate = estimate_grpo_step(config, "float32", reference_dtype, reference is not None, prompts=batch,
                                  num_generations=group, prompt_tokens=prompt_tokens, completion_tokens=new_tokens,
                                  mu=mu, grad_clip=clip, eval_batch=eval_batch, early_stops=False,
                                  max_binding_bytes=device.max_binding_bytes)
    assert_matches(estimate, measured_peaks(memory, base))
    assert peak_metrics(memory)["memory/peak/total"] == memory.peak_total
    assert set(estimate.as_metrics()) == {"memory/estimate/total", *(f"memory/estimate/{k}" for k in KINDS)}


def test_a_bfloat16_reference_and_one_update_are_smaller():
    sizes = dict(prompts=8, num_generations=8, prompt_tokens=200, completion_tokens=512, max_binding_bytes=128 << 20)
    qwen = ModelConfig(vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                       intermediate_size=4864, max_position_embeddings=32768, tie_word_embeddings=True)
    f32 = estimate_grpo_step(qwen, "float32", "float32", **sizes)
    bf16 = estimate_grpo_step(qwen, "float32", "bfloat16", **sizes)
    twice = estimate_grpo_step(qwen, "float32", "bfloat16", mu=2, **sizes)
    params = qwen.num_parameters()
    # each buffer is rounded up to its size class, by less than an eighth
    assert 8 * params <= f32.peak["optimizer"] < 9 * params  # two float32 moments
    assert f32.peak["gradients"] == f32.peak["optimizer"]  # float32 gradients, twice over while clipping
    assert 2 * params <= f32.peak["weights"] - bf16.peak["weights"] < 2.25 * params
    assert bf16.total < f32.total < twice.total
    assert "bfloat16 reference" in f32.advice and "bfloat16 reference" not in bf16.advice and "mu 1" in twice.advice


# ---------------------------------------------------------------------------------------------- the budget


def test_memory_sizes_parse_like_the_binding_cap():
    assert parse_memory("16G") == 16 << 30 and parse_memory(" 512m ") == 512 << 20 and parse_memory("2T") == 2 << 40
    assert parse_memory("17179869184") == 16 << 30
    for bad in ("", "16GB", "1.5G", "-1", "0", "G", "lots"):
        with pytest.raises(InputError, match=rf"^\${MEMORY_VAR}=.*expected a positive byte count") as error:
            parse_memory(bad)
        assert "\n" not in str(error.value)


def test_the_variable_or_an_option_sets_the_budget(device, monkeypatch):
    monkeypatch.setenv(MEMORY_VAR, "16G")
    assert device_memory_budget(device) == MemoryBudget(16 << 30, f"${MEMORY_VAR}=16G")
    assert device_memory_budget(device, override="2G").nbytes == 2 << 30  # an option wins over the variable
    monkeypatch.setenv(MEMORY_VAR, "16 GiB")
    with pytest.raises(InputError, match=MEMORY_VAR):
        device_memory_budget(device)


def test_a_cpu_adapter_budget_is_free_host_memory(device, monkeypatch):
    monkeypatch.delenv(MEMORY_VAR, raising=False)
    budget = device_memory_budget(device)
    if not device.is_software:
        assert budget is None  # wgpu reports no VRAM size
        return
    total = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]) * 1024
    assert device.runtime.pool.bytes_held < budget.nbytes <= total + device.runtime.pool.bytes_held
    assert device.name in budget.source


def test_host_memory_reads_meminfo_and_the_memory_cgroup(tmp_path):
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:  8000000 kB\nMemAvailable:  4000000 kB\n")
    (proc / "self" / "cgroup").write_text("0::/job/step\n")
    assert host_memory_available(proc, cgroup) == 4_096_000_000  # no cgroup files: MemAvailable
    (cgroup / "job" / "step").mkdir(parents=True)
    (cgroup / "job" / "step" / "memory.max").write_text("max\n")
    (cgroup / "job" / "memory.max").write_text(f"{3 << 30}\n")
    (cgroup / "job" / "memory.current").write_text(f"{1 << 30}\n")
    assert host_memory_available(proc, cgroup) == 2 << 30  # the ancestor's limit, less its usage
    (proc / "self" / "cgroup").write_text("5:cpu,cpuacct:/\n4:memory:/box\n")  # cgroup v1
    (cgroup / "memory" / "box").mkdir(parents=True)
    (cgroup / "memory" / "box" / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
    (cgroup / "memory" / "box" / "memory.usage_in_bytes").write_text(f"{1 << 28}\n")
    (cgroup / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert host_memory_available(proc, cgroup) == (1 << 30) - (1 << 28)


def test_check_fits_refuses_in_one_line_what_cannot_fit():
    estimate = estimate_grpo_step(SMALL, prompts=8, num_generations=8, prompt_tokens=40, completion_tokens=80)
    check_fits(estimate, None)  # unknown: nothing to check
    check_fits(estimate, estimate.total)
    check_fits(estimate, MemoryBudget(estimate.total + 1, "test"))
    with pytest.raises(InputError) as error:
        check_fits(estimate, MemoryBudget(1 << 20, "the host memory free to the CPU adapter lavapipe"))
    message = str(error.value)
    assert "\n" not in message and message.startswith("estimated device memory for a GRPO step: ")
    for part in ("weights ", "gradients ", "optimizer ", "activations ", "kv_cache ", "over the 1.00 MiB",
                 "CPU adapter lavapipe", "fewer prompts per step or generations per prompt, shorter completions",
                 "a bfloat16 reference model", MEMORY_VAR):
        assert part in message, part
    with pytest.raises(InputError, match="use --group-size 4, or set"):
        check_fits(estimate, 1 << 20, advice="--group-size 4")
    assert estimate.summary().startswith(f"estimated device memory for a GRPO step: {format_bytes(estimate.total)} "
                                         f"at peak (weights ")


def test_bad_sizes_are_refused_by_name():
    with pytest.raises(InputError, match="num_generations must be an integer >= 1, got 0"):
        estimate_grpo_step(SMALL, prompts=1, num_generations=0, prompt_tokens=4, completion_tokens=4)
    with pytest.raises(InputError, match="prompt_tokens 128 leave no room"):
        estimate_generation(SMALL, "float32", 1, 128, 4)
    with pytest.raises(InputError, match="weight_dtype: expected one of"):
        estimate_generation(SMALL, "int8", 1, 4, 4)
