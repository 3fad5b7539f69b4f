"""PyTorch's side of the benchmarks: which device torch runs on, and the same model (transformers, float32) there.

Owns: `--torch-device` (`parse_torch_device` checks its spelling, `resolve_torch_device` turns it into "cpu" or
"cuda:N" once the adapter is known, refusing a CUDA device torch cannot see), `synchronize` (the end of every
timed region on CUDA), `torch_device_report` (what the reports print), and `torch_twin` (our weights in
transformers on that device). On CUDA, float32 matmuls run with TF32 off, so torch's arithmetic is the same
IEEE float32 as wgrpo's kernels. Needs the `oracle` extra; torch is imported only when a benchmark compares.
"""

from __future__ import annotations

import os
import platform
import re

import numpy as np

from wgrpo.rl.errors import input_error

TORCH_DEVICE_HELP = ("device of the PyTorch side: auto (cuda when torch sees a CUDA card and the adapter is not a "
                     "CPU one, else cpu), cpu, cuda or cuda:N; float32 with TF32 off on CUDA")
_SPELLING = re.compile(r"auto|cpu|cuda(:\d+)?")


def parse_torch_device(text: str) -> str:
    """`text` as given, when it is auto, cpu, cuda or cuda:N; else an InputError naming the option."""
    if not _SPELLING.fullmatch(text):
        raise input_error(f"--torch-device must be auto, cpu, cuda or cuda:N (N a card index), got {text!r}")
    return text


def resolve_torch_device(spec: str, adapter_is_cpu: bool, asked: str | None = None) -> str:
    """"cpu" or "cuda:N" for `--torch-device spec`; an InputError when `spec` asks for CUDA that torch cannot
    use (naming `asked`, the user's spelling, when `spec` was rewritten). On CUDA, turns TF32 off for float32
    matmuls and convolutions (process-wide: the benchmark's torch)."""
    spec = parse_torch_device(spec)
    asked = asked or spec
    if spec == "cpu" or (spec == "auto" and adapter_is_cpu):
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if spec == "auto":
            return "cpu"
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise input_error(f"--torch-device {asked}: torch {torch.__version__} ({build}) reports "
                          f"torch.cuda.is_available() False; use --torch-device cpu or auto")
    index = torch.cuda.current_device() if spec in ("auto", "cuda") else int(spec.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise input_error(f"--torch-device {asked}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return f"cuda:{index}"


def synchronize(torch, device: str) -> None:
    """Wait for the device's queued work: a timed region ends here (a no-op on the CPU, which is synchronous)."""
    if device != "cpu":
        torch.cuda.synchronize(device)


def torch_device_report(device: str, threads: int) -> dict:
    """What the reports say about torch's device: device, its name, host threads, TF32 (None on the CPU)."""
    if device == "cpu":
        return {"device": "cpu", "device_name": platform.processor() or platform.machine(), "threads": threads,
                "tf32": None}
    import torch

    return {"device": device, "device_name": torch.cuda.get_device_name(device), "threads": threads, "tf32": False,
            "cuda": torch.version.cuda, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def torch_device_label(info: dict) -> str:
    """One phrase for the printed tables: 'cpu, 8 threads' or 'cuda:0 (NVIDIA H200, TF32 off)'."""
    if info["device"] == "cpu":
        return f"cpu, {info['threads']} thread{'' if info['threads'] == 1 else 's'}"
    return f"{info['device']} ({info['device_name']}, TF32 off)"


def torch_twin(config, state: dict[str, np.ndarray], threads: int, device: str = "cpu"):
    """(torch module, transformers model) of `config` holding exactly `state`, float32 on `device` (a resolved
    "cpu" or "cuda:N"); refuses a partial load."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    hf = config.to_hf_dict()
    kwargs = {k: v for k, v in hf.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    hf_config = transformers.AutoConfig.for_model(config.architecture, **kwargs)
    model = transformers.AutoModelForCausalLM.from_config(hf_config).float().to(device).eval()
    result = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                                   strict=False)  # copies the host arrays onto the device
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ValueError(f"loading our weights into {type(model).__name__}: missing {missing}, unexpected "
                         f"{list(result.unexpected_keys)}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return torch, model
