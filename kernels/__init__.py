"""WGSL compute kernels, one file per family, and the registry that reads them."""

from wgrpo.kernels.params import Field, ParamsError, ParamsLayout
from wgrpo.kernels.registry import Binding, KernelSource, families, load, workgroup_size

__all__ = ["Binding", "Field", "KernelSource", "ParamsError", "ParamsLayout", "families", "load", "workgroup_size"]
