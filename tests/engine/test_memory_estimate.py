"""The device-memory estimate of generation against the runtime's own counters (every kind to the byte), the
device budget and the refusal. A GRPO step's estimate is tested in test_memory_estimate_step.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.memory_counters import assert_matches, in_use, measured_peaks, prompts, random_model
from wgrpo.engine import InputError, ModelConfig, Tensor, generate
from wgrpo.engine.memory_budget import (MEMORY_VAR, MemoryBudget, check_fits, device_memory_budget,
                                        host_memory_available, parse_memory)
from wgrpo.engine.memory_estimate import estimate_generation, estimate_grpo_step, format_bytes, tensor_bytes

SMALL = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=192,
                    max_position_embeddings=128)
QWEN3 = ModelConfig(architecture="qwen3", vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1,
                    intermediate_size=96, max_position_embeddings=64)


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


@pytest.mark.parametrize("config,dtype,batch,samples,limit", [
    (SMALL, "float32", 3, 4, None), (SMALL, "bfloat16", 2, 1, None), (QWEN3, "float32", 1, 3, None),
    (SMALL, "float32", 2, 3, 64 << 10),  # the embedding (512, 64) and the head in two row blocks
])
def test_generation_estimate_matches_the_counters(device, monkeypatch, config, dtype, batch, samples, limit):
    if limit is not None:
        monkeypatch.setattr(device, "_binding_bytes", limit)
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


def test_an_activation_no_binding_can_hold_is_named_not_raised():
    # the prefill's embedding (1, 100, 64) has a row of 25 KiB: over a 16 KiB binding, no row block holds it
    estimate = estimate_generation(SMALL, "float32", 1, 100, 1, max_binding_bytes=16 << 10)
    assert estimate.split_activation == (1, 100, 64)
    with pytest.raises(InputError, match=r"an activation of shape \(1, 100, 64\) .* use fewer prompts"):
        check_fits(estimate, None)


def test_a_kv_cache_over_one_binding_is_named():
    # each layer's k of 16 rows x 120 positions x 2 heads x 16 floats is 240 KiB: held in row blocks, which the
    # cached attention cannot bind
    estimate = estimate_generation(SMALL, "float32", 1, 100, 20, num_samples=16, max_binding_bytes=128 << 10)
    assert estimate.split_activation == (16, 120, 2, 16)
    assert estimate_generation(SMALL, "float32", 1, 100, 20, num_samples=16, max_binding_bytes=256 << 10) \
        .split_activation is None


def test_bad_sizes_are_refused_by_name():
    with pytest.raises(InputError, match="num_generations must be an integer >= 1, got 0"):
        estimate_grpo_step(SMALL, prompts=1, num_generations=0, prompt_tokens=4, completion_tokens=4)
    with pytest.raises(InputError, match="prompt_tokens 128 leave no room"):
        estimate_generation(SMALL, "float32", 1, 128, 4)
    with pytest.raises(InputError, match="weight_dtype: expected one of"):
        estimate_generation(SMALL, "int8", 1, 4, 4)
    sizes = dict(prompts=2, num_generations=4, prompt_tokens=4, completion_tokens=4)
    with pytest.raises(InputError, match="generation_batch 6 must be a multiple of num_generations 4"):
        estimate_grpo_step(SMALL, generation_batch=6, **sizes)
    with pytest.raises(InputError, match=r"micro-batches of \[4, 3\] rows do not cut the 8 completions"):
        estimate_grpo_step(SMALL, micro_batch=[4, 3], **sizes)
    with pytest.raises(InputError, match="LoraConfig: target_modules: unknown module 'qkv_proj'"):
        estimate_grpo_step(SMALL, lora_rank=8, lora_targets="qkv_proj", **sizes)
    with pytest.raises(InputError, match="policy_dtype bfloat16: full fine-tuning trains float32 weights"):
        estimate_grpo_step(SMALL, "bfloat16", **sizes)
    with pytest.raises(InputError, match="lora_rank must be an integer >= 1, got 0"):
        estimate_grpo_step(SMALL, lora_rank=0, **sizes)
