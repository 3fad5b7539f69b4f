"""Adapter choice and the wgpu device.

Owns: listing adapters, choosing one from `--device` / `WGRPO_DEVICE` (a backend name, `cpu`, or a substring of
the adapter's name), requesting a device with the features and limits wgrpo uses. Nothing is created at import:
`get_device()` builds the device on first use. Must not import `rl`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property

import wgpu

from wgrpo.engine.errors import InputError
from wgrpo.engine.memory import parse_bytes

ENV_VAR = "WGRPO_DEVICE"
# Caps the storage binding size below the adapter's (bytes; suffixes K, M, G): tensors over it are split into row
# blocks, so the split paths of every op run on small models (tests, debugging).
BINDING_CAP_VAR = "WGRPO_MAX_BINDING_BYTES"
WIDE_READS_VAR = "WGRPO_WIDE_READS"  # 0: CPU adapters read f32 quads as 4 words, as GPUs do (see `wide_reads`)

BACKENDS = ("vulkan", "metal", "dx12", "gl")
_BACKEND_NAMES = {"vulkan": "Vulkan", "metal": "Metal", "dx12": "D3D12", "gl": "OpenGL"}
_TYPE_RANK = {"DiscreteGPU": 0, "IntegratedGPU": 1, "VirtualGPU": 2, "CPU": 3}  # lower is preferred
_BACKEND_RANK = {"Vulkan": 0, "Metal": 0, "D3D12": 1, "OpenGL": 2}

# The optional features wgrpo uses when an adapter has them.
FEATURES = {"shader-f16": "f16 storage and math", "subgroup": "subgroup shuffles", "timestamp-query": "GPU timers",
            "shader-int64": "64-bit integers (the CPU matmuls' wide reads)"}
# The limits wgrpo depends on; the device asks for the adapter's maximum of each.
LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroups-per-dimension",
    "min-storage-buffer-offset-alignment",
    "min-uniform-buffer-offset-alignment",
)

INSTALL_HINT = (
    "wgrpo needs a GPU adapter reachable through wgpu (Vulkan, Metal, DX12 or OpenGL). On Linux without a GPU, "
    "install Mesa's software Vulkan driver lavapipe: `apt-get install mesa-vulkan-drivers` (Debian bookworm: "
    "`apt-get install -t bookworm-backports mesa-vulkan-drivers` for Mesa 25, about 5x faster); on other systems "
    "install your GPU's Vulkan driver. `wgrpo devices` lists what wgpu can see."
)


class NoAdapterError(RuntimeError):
    """No adapter exists, or none matches the requested device."""


@dataclass(frozen=True)
class AdapterSummary:
    """What `wgrpo devices` prints about one adapter."""

    index: int
    name: str
    backend: str  # wgpu's backend_type: Vulkan, Metal, D3D12, OpenGL
    adapter_type: str  # DiscreteGPU, IntegratedGPU, VirtualGPU, CPU
    driver: str
    features: dict[str, bool]
    limits: dict[str, int]
    adapter: wgpu.GPUAdapter = field(repr=False, compare=False)

    @property
    def preference(self) -> tuple[int, int, int]:
        return (_TYPE_RANK.get(self.adapter_type, 9), _BACKEND_RANK.get(self.backend, 9), self.index)

    def matches(self, spec: str) -> bool:
        spec = spec.strip().lower()
        if spec in BACKENDS:
            return self.backend == _BACKEND_NAMES[spec]
        if spec == "cpu":
            return self.adapter_type == "CPU"
        if spec.isdigit():
            return self.index == int(spec)
        return spec in self.name.lower()


def list_adapters() -> list[AdapterSummary]:
    """Every adapter wgpu can see, in enumeration order."""
    summaries = []
    for index, adapter in enumerate(wgpu.gpu.enumerate_adapters_sync()):
        info = adapter.info
        summaries.append(
            AdapterSummary(
                index=index,
                name=info.get("device", "") or info.get("vendor", "unknown"),
                backend=info.get("backend_type", "unknown"),
                adapter_type=info.get("adapter_type", "unknown"),
                driver=info.get("description", ""),
                features={name: name in adapter.features for name in FEATURES},
                limits={name: int(adapter.limits[name]) for name in LIMITS if name in adapter.limits},
                adapter=adapter,
            )
        )
    return summaries


def choose_adapter(spec: str | None = None, adapters: list[AdapterSummary] | None = None) -> AdapterSummary:
    """The adapter named by `spec` (or `$WGRPO_DEVICE`), else the best hardware adapter.

    `spec` is a backend (vulkan, metal, dx12, gl), `cpu` for a software adapter, an adapter index from
    `wgrpo devices`, or a substring of the adapter name. Among several matches the most capable wins: discrete
    before integrated before software, Vulkan/Metal before DX12 before OpenGL.
    """
    source = "device"
    if spec is None:
        spec, source = os.environ.get(ENV_VAR) or None, f"${ENV_VAR}"
    adapters = list_adapters() if adapters is None else adapters
    if not adapters:
        raise NoAdapterError(f"no GPU adapter found. {INSTALL_HINT}")
    candidates = [a for a in adapters if spec is None or a.matches(spec)]
    if not candidates:
        seen = "; ".join(f"[{a.index}] {a.name} ({a.backend}, {a.adapter_type})" for a in adapters)
        raise NoAdapterError(
            f"no adapter matches {source}={spec!r}: expected a backend ({', '.join(BACKENDS)}), 'cpu', an index, "
            f"or part of an adapter name. Adapters found: {seen}"
        )
    return min(candidates, key=lambda a: a.preference)


def hardware_adapter(ordinal: int, spec: str | None = None,
                     adapters: list[AdapterSummary] | None = None) -> AdapterSummary:
    """The hardware adapter number `ordinal` (0-based, in enumeration order) among those `spec` matches, or,
    without a spec, among those of the best adapter's backend (each GPU is listed once per backend); discrete
    GPUs only where there are any, as a scheduler counts them. What a process given GPU `ordinal` by a scheduler
    (Ray's GPU ids) uses: Vulkan, Metal and DX12 ignore CUDA_VISIBLE_DEVICES, so every process sees every GPU.
    The orders agree when both follow the PCI bus (CUDA_DEVICE_ORDER=PCI_BUS_ID for NVIDIA's)."""
    adapters = list_adapters() if adapters is None else adapters
    hardware = [a for a in adapters if a.adapter_type != "CPU"]
    if spec is not None:
        hardware = [a for a in hardware if a.matches(spec)]
    if any(a.adapter_type == "DiscreteGPU" for a in hardware):  # schedulers count the discrete cards only
        hardware = [a for a in hardware if a.adapter_type == "DiscreteGPU"]
    if spec is None and hardware:
        backend = min(hardware, key=lambda a: a.preference).backend
        hardware = [a for a in hardware if a.backend == backend]
    if not 0 <= ordinal < len(hardware):
        seen = "; ".join(f"[{a.index}] {a.name} ({a.backend})" for a in hardware) or "none"
        raise NoAdapterError(f"GPU {ordinal} was assigned to this process, but wgpu sees {len(hardware)} hardware "
                             f"adapter(s){f' matching {spec!r}' if spec else ''}: {seen}")
    return hardware[ordinal]


class Device:
    """A wgpu device on one adapter, with the optional features it enabled and the limits it got."""

    def __init__(self, summary: AdapterSummary):
        self.summary = summary
        wanted = [name for name, present in summary.features.items() if present]
        self.features = frozenset(wanted)
        required_limits = {k: v for k, v in summary.limits.items() if not k.startswith("min-")}
        self.wgpu = summary.adapter.request_device_sync(
            label=f"wgrpo on {summary.name}", required_features=wanted, required_limits=required_limits
        )
        self.limits = {name: int(self.wgpu.limits[name]) for name in LIMITS if name in self.wgpu.limits}

    @property
    def name(self) -> str:
        return self.summary.name

    @property
    def is_software(self) -> bool:
        return self.summary.adapter_type == "CPU"

    @property
    def has_f16(self) -> bool:
        return "shader-f16" in self.features

    @property
    def has_subgroups(self) -> bool:
        return "subgroup" in self.features

    @property
    def has_int64(self) -> bool:
        return "shader-int64" in self.features

    @cached_property
    def wide_reads(self) -> bool:
        """Whether kernels read f32 quads as two 64-bit words (`kernels.load(wide_reads=True)`): on CPU adapters
        with shader-int64, unless $WGRPO_WIDE_READS is 0. Lavapipe runs each storage read as a loop over the
        lanes per word, so half the words is half that work; GPUs read 16 bytes at once either way."""
        text = os.environ.get(WIDE_READS_VAR, "").strip()
        if text not in ("", "0", "1"):
            raise InputError(f"${WIDE_READS_VAR} must be 0 or 1, got {text!r}")
        return self.has_int64 and self.is_software and text != "0"

    @property
    def has_timestamps(self) -> bool:
        return "timestamp-query" in self.features

    @property
    def max_binding_bytes(self) -> int:
        """The largest storage binding: the adapter's limit, or less under $WGRPO_MAX_BINDING_BYTES."""
        return self._binding_bytes

    @cached_property
    def _binding_bytes(self) -> int:
        limit = self.limits["max-storage-buffer-binding-size"]
        cap = binding_cap()
        return min(limit, cap) if cap is not None else limit

    @cached_property
    def runtime(self):
        from wgrpo.engine.runtime import Runtime  # runtime imports device; bind lazily to keep one direction

        return Runtime(self)

    def __repr__(self) -> str:
        return f"Device({self.summary.name!r}, {self.summary.backend}, {self.summary.adapter_type})"


def binding_cap() -> int | None:
    """$WGRPO_MAX_BINDING_BYTES in bytes (K, M and G mean KiB, MiB, GiB; at least 1024), or None when unset."""
    text = os.environ.get(BINDING_CAP_VAR, "").strip()
    return parse_bytes(text, f"${BINDING_CAP_VAR}", minimum=1024) if text else None


_devices: dict[str | None, Device] = {}
_lock = threading.Lock()


def get_device(spec: str | Device | None = None) -> Device:
    """The shared device for `spec` (see `choose_adapter`), created on first use."""
    if isinstance(spec, Device):
        return spec
    key = spec if spec is not None else os.environ.get(ENV_VAR) or None
    with _lock:
        if key not in _devices:
            summary = choose_adapter(key)
            # Two specs naming one adapter share one device, so tensors from both can meet in one op.
            for device in _devices.values():
                if device.summary.index == summary.index:
                    _devices[key] = device
                    break
            else:
                _devices[key] = Device(summary)
        return _devices[key]
