"""WGSL compute kernels, one file per family, and the registry that reads them."""

from wgrpo.kernels.registry import Binding, KernelSource, families, load

__all__ = ["Binding", "KernelSource", "families", "load"]
