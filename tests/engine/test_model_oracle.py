"""The model against Hugging Face transformers: logits and gradients of random tiny Qwen2 and Llama models.

Needs the `oracle` extra (torch==2.13.0 and transformers); skips cleanly without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from wgrpo.engine import Tensor, ops  # noqa: E402
from wgrpo.engine.model import load_pretrained  # noqa: E402

CASES = {
    # GQA with q/k/v biases and a tied head, odd sizes
    "qwen2-gqa-tied": dict(model_type="qwen2", vocab_size=97, hidden_size=48, intermediate_size=83,
                           num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                           tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-6),
    # untied head, plain multi-head attention, another theta
    "llama-untied": dict(model_type="llama", vocab_size=61, hidden_size=40, intermediate_size=70,
                         num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=5,
                         tie_word_embeddings=False, rope_theta=500000.0, rms_norm_eps=1e-5),
    # multi-query attention (one kv head), untied qwen2
    "qwen2-mqa": dict(model_type="qwen2", vocab_size=50, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=1,
                      tie_word_embeddings=False, rope_theta=1000.0, rms_norm_eps=1e-6),
}


def build_hf_model(case: str, tmp_path):
    kwargs = dict(CASES[case])
    config = transformers.AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():  # weights far from init, so every term of the forward matters
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_gradients_match_transformers(device, tmp_path, case):
    hf_model = build_hf_model(case, tmp_path)
    vocab = CASES[case]["vocab_size"]
    rng = np.random.default_rng(1)
    ids = rng.integers(0, vocab, size=(2, 11))
    targets = rng.integers(0, vocab, size=(2, 11))

    model, _ = load_pretrained(tmp_path, device)
    model.requires_grad_()
    logits = model(ids)
    loss = ops.cross_entropy(logits, Tensor.from_numpy(targets.astype(np.int32), device))
    loss.backward()

    hf_logits = hf_model(torch.from_numpy(ids)).logits
    hf_loss = torch.nn.functional.cross_entropy(hf_logits.reshape(-1, vocab), torch.from_numpy(targets).reshape(-1))
    hf_loss.backward()

    assert relative_error(logits.numpy(), hf_logits.detach().numpy()) < 1e-4
    assert abs(float(loss.numpy()) - hf_loss.item()) < 1e-4 * abs(hf_loss.item())
    hf_grads = {name: p.grad.numpy() for name, p in hf_model.named_parameters()}
    for name, param in model.named_parameters().items():
        assert param.grad is not None, f"{name} got no gradient"
        assert relative_error(param.grad.numpy(), hf_grads[name]) < 1e-3, name


def test_token_logprobs_match_transformers_log_softmax(device, tmp_path):
    hf_model = build_hf_model("qwen2-gqa-tied", tmp_path)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 97, size=(3, 6))
    model, _ = load_pretrained(tmp_path, device)
    ours = model.token_logprobs(ids[:, :-1], ids[:, 1:], temperature=0.7).numpy()
    with torch.no_grad():
        logits = hf_model(torch.from_numpy(ids[:, :-1])).logits / 0.7
        expected = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(ids[:, 1:, None])).squeeze(-1)
    assert relative_error(ours, expected.numpy()) < 1e-4

