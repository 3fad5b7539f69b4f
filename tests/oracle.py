"""transformers as the oracle: what its greedy decoding gives for a prompt of token ids."""

from __future__ import annotations


def transformers_greedy(hf_model, prompt: list[int], new_tokens: int) -> list[int]:
    """The `new_tokens` ids `hf_model.generate` picks greedily after `prompt`, never stopping at an end-of-text id."""
    import torch

    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return out[0, len(prompt):].tolist()
