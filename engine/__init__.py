"""wgrpo's engine: WGSL kernels driven through wgpu, tensors with autograd, and the model built on them.

Importing this package creates no device; the first tensor or `get_device()` call does.
"""

from engine import ops
from engine.autograd import no_grad
from engine.config import ModelConfig
from engine.device import NoAdapterError, choose_adapter, get_device, list_adapters
from engine.generate import GenerationResult, generate
from engine.model import Model, load_pretrained
from engine.runtime import KernelError
from engine.tensor import Tensor

__all__ = ["GenerationResult", "KernelError", "Model", "ModelConfig", "NoAdapterError", "Tensor", "choose_adapter",
           "generate", "get_device", "list_adapters", "load_pretrained", "no_grad", "ops"]
