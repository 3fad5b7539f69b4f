"""Adapter choice, on made-up adapter lists (no GPU needed) and on the real one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wgrpo.engine.device import (ENV_VAR, AdapterSummary, Device, NoAdapterError, choose_adapter,
                                 hardware_adapter)
from wgrpo.engine.errors import InputError


def fake(index, name, backend, adapter_type):
    return AdapterSummary(index, name, backend, adapter_type, "driver", {}, {}, adapter=None)


ADAPTERS = [
    fake(0, "llvmpipe (LLVM 15.0.6, 256 bits)", "OpenGL", "CPU"),
    fake(1, "llvmpipe (LLVM 15.0.6, 256 bits)", "Vulkan", "CPU"),
    fake(2, "Intel(R) UHD Graphics 620", "Vulkan", "IntegratedGPU"),
    fake(3, "AMD Radeon RX 7900 XTX", "Vulkan", "DiscreteGPU"),
    fake(4, "AMD Radeon RX 7900 XTX", "OpenGL", "DiscreteGPU"),
]


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_default_prefers_discrete_hardware_on_the_best_backend():
    assert choose_adapter(None, ADAPTERS).index == 3


@pytest.mark.parametrize("spec, index", [("vulkan", 3), ("gl", 4), ("cpu", 1), ("intel", 2), ("UHD", 2), ("0", 0),
                                         ("radeon", 3)])
def test_spec_selects(spec, index):
    assert choose_adapter(spec, ADAPTERS).index == index


TWO_GPUS = [*ADAPTERS, fake(5, "AMD Radeon RX 7900 XTX", "Vulkan", "DiscreteGPU"),
            fake(6, "AMD Radeon RX 7900 XTX", "OpenGL", "DiscreteGPU")]


@pytest.mark.parametrize("ordinal, spec, index", [(0, None, 3), (1, None, 5), (0, "gl", 4), (1, "gl", 6),
                                                  (1, "radeon", 4)])
def test_a_schedulers_gpu_ordinal_picks_the_hardware_adapter_of_that_rank(ordinal, spec, index):
    # every GPU is listed once per backend, software adapters are not GPUs, and a scheduler counts the discrete
    # cards (not the integrated Intel one): GPU k is the k-th discrete adapter of the best backend (Vulkan
    # here), or of the backend the spec names
    assert hardware_adapter(ordinal, spec, TWO_GPUS).index == index


def test_without_discrete_gpus_the_integrated_one_counts():
    assert hardware_adapter(0, None, ADAPTERS[:3]).index == 2


def test_a_gpu_ordinal_beyond_the_adapters_names_what_exists():
    with pytest.raises(NoAdapterError, match=r"GPU 2 was assigned .* sees 2 hardware adapter\(s\): \[3\] AMD"):
        hardware_adapter(2, None, TWO_GPUS)
    with pytest.raises(NoAdapterError, match=r"sees 0 hardware adapter\(s\): none"):
        hardware_adapter(0, None, ADAPTERS[:2])


def test_env_var_selects(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert choose_adapter(None, ADAPTERS).index == 1


def test_explicit_spec_beats_env_var(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert choose_adapter("intel", ADAPTERS).index == 2


def test_unknown_spec_names_itself_and_lists_adapters():
    with pytest.raises(NoAdapterError, match=r"metal.*Adapters found: \[0\] llvmpipe"):
        choose_adapter("metal", ADAPTERS)


def test_env_var_mismatch_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "nvidia")
    with pytest.raises(NoAdapterError, match=r"\$WGRPO_DEVICE='nvidia'"):
        choose_adapter(None, ADAPTERS)


def test_no_adapter_says_what_to_install():
    with pytest.raises(NoAdapterError, match="mesa-vulkan-drivers"):
        choose_adapter(None, [])


def test_import_creates_no_device():
    code = "import wgrpo.engine, wgrpo.engine.device as d; assert not d._devices, d._devices; print('lazy')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


def test_real_device_reports_features_and_limits(device):
    assert device.max_binding_bytes >= 1 << 20
    assert set(device.features) <= {"shader-f16", "subgroup", "timestamp-query", "shader-int64"}
    assert device.runtime is device.runtime  # one runtime per device


def _unopened_like(device) -> Device:
    """A Device object with `device`'s adapter and features and no wgpu device behind it."""
    twin = Device.__new__(Device)
    twin.summary, twin.features = device.summary, device.features
    return twin


def test_wide_reads_follow_the_adapter_and_the_variable(device, monkeypatch):
    default = device.has_int64 and device.is_software
    for value, expected in (("", default), ("1", default), ("0", False)):
        monkeypatch.setenv("WGRPO_WIDE_READS", value)
        assert _unopened_like(device).wide_reads is expected
    monkeypatch.setenv("WGRPO_WIDE_READS", "yes")
    with pytest.raises(InputError, match=r"\$WGRPO_WIDE_READS must be 0 or 1, got 'yes'"):
        _unopened_like(device).wide_reads
