"""`wgrpo bench --memory`: the table of estimates at real shapes, and a measured step that matches its estimate."""

from __future__ import annotations

import pytest

from wgrpo.engine import InputError
from wgrpo.tools import bench_memory
from wgrpo.tools.bench import BenchConfig
from wgrpo.tools.bench_checkpoints import QUICK
from wgrpo.tools.bench_memory import MemoryBenchConfig, estimate, measure, run_memory_bench


def test_the_table_of_real_shapes(capsys, device):
    options = MemoryBenchConfig(memory_shapes="qwen2.5-0.5b",
                                memory_setups="full, micro-batch 8; full, micro-batch 8, checkpointing; LoRA r=16, "
                                              "micro-batch 8, checkpointing")
    assert run_memory_bench(options, BenchConfig()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("| shape | setup | weights") and "measured" not in lines[1]
    # under a small binding cap (the suite's second pass) the real shapes' activations are marked as over it
    assert [line.split(" | ")[1].split(" (an activation")[0] for line in lines[3:]] == options.setup_names()
    plain, checkpointed, lora = (estimate(options, "qwen2.5-0.5b", setup, device.max_binding_bytes)
                                 for setup in options.setup_names())
    assert checkpointed.peak["activations"] < plain.peak["activations"] / 3
    assert lora.total < checkpointed.total / 3  # no f32 master, gradients or moments of the base


@pytest.mark.parametrize("setup", ["full, micro-batch 1, checkpointing", "LoRA r=16, micro-batch 2"])
def test_a_measured_step_peaks_at_its_estimate(device, monkeypatch, setup):
    monkeypatch.setitem(bench_memory.SHAPES, "qwen2.5-0.5b", QUICK["qwen2.5-0.5b"])
    options = MemoryBenchConfig(memory_shapes="qwen2.5-0.5b", memory_setups=setup, memory_prompts=2,
                                memory_group_size=2, memory_prompt_tokens=5, memory_new_tokens=4)
    measured = measure(options, "qwen2.5-0.5b", setup, device, seed=0)
    expected = estimate(options, "qwen2.5-0.5b", setup, device.max_binding_bytes, early_stops=False)
    assert measured["peak"] == expected.peak
    assert measured["peak_total"] == expected.total


def test_bad_options_are_named():
    with pytest.raises(InputError, match="--memory-shapes 'qwen9': choose from"):
        MemoryBenchConfig(memory_shapes="qwen9")
    with pytest.raises(InputError, match="--memory-setups: \\['huge'\\]"):
        MemoryBenchConfig(memory_setups="huge")
    with pytest.raises(InputError, match="--memory-group-size must be at least 2"):
        MemoryBenchConfig(memory_group_size=1)
