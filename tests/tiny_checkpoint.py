"""A tiny Qwen2-style checkpoint with a tokenizer, for tests that run the command line on a real model."""

from __future__ import annotations

from pathlib import Path


def save_tiny_checkpoint(path: Path, device, seed: int = 1) -> Path:
    """A random 1-layer, 32-wide model with a 300-token tokenizer trained on one-digit arithmetic prompts."""
    from wgrpo.engine import END_OF_TEXT, Model, ModelConfig, train_tokenizer
    from wgrpo.rl.tasks import get_task

    task = get_task("arithmetic", digits=1, ops="+", template="plain", instructions=False)
    tokenizer = train_tokenizer([task.sample(i).prompt + " 1+2+0=3</think> <answer>3</answer>" for i in range(40)],
                                vocab_size=300)
    eos = tokenizer.token_to_id(END_OF_TEXT)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=2,
                         num_kv_heads=1, intermediate_size=48, max_position_embeddings=64, eos_token_id=eos,
                         pad_token_id=eos)
    Model.random(config, seed=seed, device=device).save_pretrained(path, tokenizer)
    return path
