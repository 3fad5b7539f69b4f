"""wgrpo's engine: WGSL kernels driven through wgpu, tensors with autograd, and the model built on them.

This package's namespace is the engine's public surface: `wgrpo.rl` imports only what is exported here.
Importing it creates no device; the first tensor or `get_device()` call does.
"""

from wgrpo.engine import ops
from wgrpo.engine.atomic_dir import recover_checkpoints
from wgrpo.engine.autograd import no_grad
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.device import ENV_VAR as DEVICE_ENV_VAR
from wgrpo.engine.device import NoAdapterError, choose_adapter, get_device, hardware_adapter, list_adapters
from wgrpo.engine.errors import CheckpointWriteError, InputError
from wgrpo.engine.generate import GenerationResult, generate
from wgrpo.engine.hf import CHECKPOINT_ENTRIES, foreign_entries, write_checkpoint
from wgrpo.engine.hf_tokenizer import load_tokenizer
from wgrpo.engine.hub import is_hub_id, resolve_model_path
from wgrpo.engine.lora import LoraAdapters, LoraConfig, attach_lora, merge_and_unload, merged_state_dict
from wgrpo.engine.memory_budget import check_fits, device_memory_budget
from wgrpo.engine.memory_estimate import MemoryEstimate, estimate_generation, estimate_grpo_step, peak_metrics
from wgrpo.engine.model import Model, load_pretrained
from wgrpo.engine.ops.rows import RowSelection
from wgrpo.engine.optim import AdamW, clip_coefficient, clip_grad_norm_
from wgrpo.engine.peft_io import is_adapter_dir, load_adapter, load_peft_model, save_adapter
from wgrpo.engine.readback import read_together
from wgrpo.engine.runtime import KernelError
from wgrpo.engine.tensor import Tensor
from wgrpo.engine.tokenizer import END_OF_TEXT, PretrainedTokenizer, train_tokenizer
from wgrpo.engine.weight_sync import load_trainable_arrays, trainable_arrays, trainable_tensors

__all__ = ["AdamW", "CHECKPOINT_ENTRIES", "DEVICE_ENV_VAR", "foreign_entries", "CheckpointWriteError", "END_OF_TEXT", "GenerationResult", "InputError", "KernelError",
           "LoraAdapters", "LoraConfig", "MemoryEstimate", "Model", "ModelConfig", "NoAdapterError",
           "PretrainedTokenizer", "RowSelection", "Tensor", "attach_lora", "check_fits", "choose_adapter",
           "clip_coefficient", "clip_grad_norm_", "device_memory_budget", "estimate_generation", "estimate_grpo_step",
           "generate", "get_device", "hardware_adapter", "is_adapter_dir", "is_hub_id", "list_adapters",
           "load_adapter", "load_peft_model", "load_pretrained", "load_tokenizer", "load_trainable_arrays", "merge_and_unload", "merged_state_dict", "no_grad", "ops",
           "peak_metrics", "read_together", "recover_checkpoints", "resolve_model_path", "save_adapter",
           "train_tokenizer", "trainable_arrays", "trainable_tensors", "write_checkpoint"]
