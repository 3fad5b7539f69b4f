"""The same model in PyTorch (transformers, f32 on the CPU) with our weights, for the benchmarks' ratios.

Needs the `oracle` extra; imported only when a benchmark compares against torch.
"""

from __future__ import annotations

import numpy as np


def torch_twin(config, state: dict[str, np.ndarray], threads: int):
    """(torch module, transformers model) of `config` holding exactly `state`; refuses a partial load."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    hf = config.to_hf_dict()
    kwargs = {k: v for k, v in hf.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    hf_config = transformers.AutoConfig.for_model(config.architecture, **kwargs)
    model = transformers.AutoModelForCausalLM.from_config(hf_config).float().eval()
    result = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                                   strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ValueError(f"loading our weights into {type(model).__name__}: missing {missing}, unexpected "
                         f"{list(result.unexpected_keys)}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return torch, model
