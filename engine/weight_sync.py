"""The trainable weights of a model as host arrays, and written back into another copy of the same model in place.

A rollout worker holds its own copy of the policy on its own adapter; after every optimizer step the learner's
trainable weights travel to it as numpy arrays (`trainable_arrays`) and land in the worker's existing device
buffers (`load_trainable_arrays`, written by the queue with no second copy on the device): the fused q/k/v
and gate/up buffers stay one buffer each, and the recorded decode steps and cached bind groups that name them
stay valid. The trainable weights are every parameter of a
full fine-tune, or only the LoRA adapters' matrices of a LoRA model (its base is frozen, so a worker loads it once).
Must not import `rl`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from wgrpo.engine.errors import InputError
from wgrpo.engine.tensor import Tensor  # noqa: F401 - the type of trainable_tensors' values


def trainable_tensors(model) -> dict[str, Tensor]:
    """name -> tensor of what an optimizer trains: the LoRA adapters' matrices under PEFT's names when adapters
    are attached, else every parameter under its Hugging Face name."""
    if model.adapters is not None:
        return model.adapters.named_parameters()
    return model.named_parameters()


def trainable_arrays(model) -> dict[str, np.ndarray]:
    """The trainable tensors' values on the host, in the dtype held (one read-back each)."""
    return {name: tensor.numpy() for name, tensor in trainable_tensors(model).items()}


def load_trainable_arrays(model, arrays: Mapping[str, np.ndarray], source: str = "weights") -> int:
    """Write `arrays` (exactly the names, shapes and dtypes `trainable_arrays` gives for this architecture) into
    the model's trainable tensors in place; returns the bytes written. A mismatch is an InputError naming
    `source` and the tensor, raised before anything is written."""
    tensors = trainable_tensors(model)
    missing = [name for name in tensors if name not in arrays]
    unexpected = [name for name in arrays if name not in tensors]
    if missing or unexpected:
        raise InputError(f"{source}: the tensors differ from the model's: "
                         f"{'missing ' + ', '.join(missing[:3]) if missing else ''}"
                         f"{'; ' if missing and unexpected else ''}"
                         f"{'unexpected ' + ', '.join(unexpected[:3]) if unexpected else ''}")
    for name, tensor in tensors.items():
        array = np.asarray(arrays[name])
        if array.shape != tensor.shape or array.dtype != tensor.dtype:
            raise InputError(f"{source}: {name} is {array.dtype} {array.shape}, the model holds "
                             f"{tensor.dtype} {tensor.shape}")
    written = 0
    for name, tensor in tensors.items():
        array = np.ascontiguousarray(arrays[name])
        for (start, stop), part in zip(tensor.row_ranges, tensor.parts):  # the held row blocks, one by one
            rows = array if len(tensor.parts) == 1 else array[start:stop]
            block, offset, _ = part.binding()  # straight into the buffer: no second copy on the device
            part.runtime.write(block, offset, memoryview(np.ascontiguousarray(rows)).cast("B"))
        written += tensor.nbytes
    return written
