"""wgrpo's engine: WGSL kernels driven through wgpu, tensors, and (later) the model built on them.

Importing this package creates no device; the first tensor or `get_device()` call does.
"""

from engine import ops
from engine.device import NoAdapterError, choose_adapter, get_device, list_adapters
from engine.runtime import KernelError
from engine.tensor import Tensor

__all__ = ["KernelError", "NoAdapterError", "Tensor", "choose_adapter", "get_device", "list_adapters", "ops"]
