"""Every supported architecture against transformers: random tiny Qwen2, Qwen3 (q/k norms, head_dim != C / H),
Llama with llama3 and linear RoPE scaling or its own head_dim, and a SmolLM2-shaped Llama, tied and untied, built by
transformers itself. Logits and gradients of `load_pretrained`, greedy decoding through the KV cache, and
`Model.save_pretrained` read back by transformers; then the refusals of what the engine does not implement.

Needs the `oracle` extra (torch and transformers); skips cleanly without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from wgrpo.engine import InputError, Tensor, generate, load_pretrained, ops  # noqa: E402
from wgrpo.engine.ops.rope import default_inv_freq  # noqa: E402
from tests.oracle import transformers_greedy  # noqa: E402

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
SEQ = 40  # longer than LLAMA3_ROPE's original context, so positions past it are exercised
CASES = {
    # Qwen3: head_dim 16 while hidden_size / heads = 8; q_proj (64, 32), o_proj (32, 64)
    "qwen3-tied": ("Qwen3Config", dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                       tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6)),
    "qwen3-untied": ("Qwen3Config", dict(vocab_size=71, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                         num_attention_heads=6, num_key_value_heads=3, head_dim=8,
                                         tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-6)),
    "qwen2-tied": ("Qwen2Config", dict(vocab_size=89, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
                                       num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                                       rope_theta=1e6, rms_norm_eps=1e-6)),
    "llama3-rope-untied": ("LlamaConfig", dict(vocab_size=83, hidden_size=32, intermediate_size=56,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               max_position_embeddings=128, rope_theta=500000.0,
                                               rope_scaling=LLAMA3_ROPE, tie_word_embeddings=False,
                                               rms_norm_eps=1e-5)),
    "llama3-rope-head-dim-tied": ("LlamaConfig", dict(vocab_size=67, hidden_size=48, intermediate_size=64,
                                                      num_hidden_layers=2, num_attention_heads=4,
                                                      num_key_value_heads=1, head_dim=16,
                                                      max_position_embeddings=128, rope_theta=500000.0,
                                                      rope_scaling=LLAMA3_ROPE, tie_word_embeddings=True,
                                                      rms_norm_eps=1e-5)),
    "llama-linear-rope-tied": ("LlamaConfig", dict(vocab_size=59, hidden_size=40, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=5,
                                                   rope_scaling={"rope_type": "linear", "factor": 4.0},
                                                   tie_word_embeddings=True, rms_norm_eps=1e-5)),
    # Llama with head_dim 12 while hidden_size / heads = 8, untied
    "llama-head-dim-untied": ("LlamaConfig", dict(vocab_size=61, hidden_size=32, intermediate_size=48,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                  head_dim=12, tie_word_embeddings=False, rms_norm_eps=1e-5)),
    # SmolLM2's shape, shrunk: a tied Llama with 3 query heads per kv head and theta 1e5
    "smollm2-tied": ("LlamaConfig", dict(vocab_size=73, hidden_size=48, intermediate_size=128, num_hidden_layers=3,
                                         num_attention_heads=3, num_key_value_heads=1, tie_word_embeddings=True,
                                         rope_theta=100000.0, rms_norm_eps=1e-5)),
}
EXPECTED = {  # what our config must read from each
    "qwen3-tied": ("qwen3", 16, "default"), "qwen3-untied": ("qwen3", 8, "default"),
    "qwen2-tied": ("qwen2", 8, "default"), "llama3-rope-untied": ("llama", 8, "llama3"),
    "llama3-rope-head-dim-tied": ("llama", 16, "llama3"), "llama-linear-rope-tied": ("llama", 8, "linear"),
    "llama-head-dim-untied": ("llama", 12, "default"), "smollm2-tied": ("llama", 16, "default"),
}


def build_hf_model(case: str, directory):
    """The transformers model of `case` with weights far from init, saved to `directory` as f32 safetensors."""
    config_class, kwargs = CASES[case]
    kwargs = {"max_position_embeddings": 128, **kwargs}
    hf_config = getattr(transformers, config_class)(**kwargs)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config).float().eval()
    with torch.no_grad():  # every term of the forward matters, and greedy decoding has no near-ties
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    model.save_pretrained(directory, safe_serialization=True)
    return model


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory, device):
    """(name, transformers model, our model loaded from its checkpoint, checkpoint directory)."""
    directory = tmp_path_factory.mktemp(request.param)
    hf_model = build_hf_model(request.param, directory)
    model, _ = load_pretrained(directory, device)
    return request.param, hf_model, model, directory


def test_config_and_rope_frequencies(case):
    name, hf_model, model, _ = case
    architecture, head_dim, rope_type = EXPECTED[name]
    cfg = model.config
    assert (cfg.architecture, cfg.head_dim, cfg.rope_type) == (architecture, head_dim, rope_type)
    assert cfg.tie_word_embeddings == name.endswith("-tied")
    assert cfg.num_parameters() == sum(p.numel() for p in hf_model.parameters())
    assert sorted(model.named_parameters()) == sorted(name for name, _ in hf_model.named_parameters())
    hf_inv_freq = hf_model.model.rotary_emb.inv_freq.numpy()
    np.testing.assert_allclose(model.inv_freq.numpy(), hf_inv_freq, rtol=1e-6, atol=0)
    if rope_type != "default":  # the scaling changes the frequencies, so a model ignoring it would fail below
        assert not np.allclose(hf_inv_freq, default_inv_freq(head_dim, cfg.rope_theta), rtol=1e-3)


def test_logits_and_gradients_match_transformers(case):
    name, hf_model, model, _ = case
    vocab = model.config.vocab_size
    rng = np.random.default_rng(1)
    ids = rng.integers(0, vocab, size=(2, SEQ))
    targets = rng.integers(0, vocab, size=(2, SEQ))

    model.requires_grad_()
    for p in model.parameters():
        p.grad = None
    logits = model(ids)
    loss = ops.cross_entropy(logits, Tensor.from_numpy(targets.astype(np.int32), model.device))
    loss.backward()
    model.requires_grad_(False)

    hf_model.zero_grad()
    hf_logits = hf_model(torch.from_numpy(ids)).logits
    hf_loss = torch.nn.functional.cross_entropy(hf_logits.reshape(-1, vocab), torch.from_numpy(targets).reshape(-1))
    hf_loss.backward()

    assert relative_error(logits.numpy(), hf_logits.detach().numpy()) < 1e-4
    assert abs(float(loss.numpy()) - hf_loss.item()) < 1e-4 * abs(hf_loss.item())
    hf_grads = {n: p.grad.numpy() for n, p in hf_model.named_parameters()}
    for n, param in model.named_parameters().items():
        assert param.grad is not None, f"{n} got no gradient"
        assert relative_error(param.grad.numpy(), hf_grads[n]) < 1e-3, n


def test_greedy_generation_matches_transformers(case):
    name, hf_model, model, _ = case
    rng = np.random.default_rng(2)
    # two lengths, so the shorter prompt is left-padded in the KV cache; both run past position 16
    prompts = [rng.integers(0, model.config.vocab_size, size=n).tolist() for n in (SEQ - 8, 13)]
    result = generate(model, prompts, max_new_tokens=8, temperature=0, eos_token_ids=())
    for prompt, seq in zip(prompts, result.sequences):
        assert seq.token_ids.tolist() == transformers_greedy(hf_model, prompt, 8)
        assert len(seq.token_ids) == 8


def test_save_pretrained_loads_in_transformers_with_the_same_logits(case, tmp_path):
    name, hf_model, model, _ = case
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    assert type(reloaded) is type(hf_model)
    assert reloaded.config.tie_word_embeddings == hf_model.config.tie_word_embeddings
    assert reloaded.config.head_dim == model.config.head_dim
    assert reloaded.config.rope_parameters == hf_model.config.rope_parameters
    ids = torch.from_numpy(np.random.default_rng(3).integers(0, model.config.vocab_size, size=(2, SEQ)))
    with torch.no_grad():
        expected = hf_model(ids).logits
        again = reloaded(ids).logits
    assert torch.equal(again, expected)  # the same weights and the same config: the same computation
    assert relative_error(model(ids.numpy()).numpy(), again.numpy()) < 1e-4


# ---- refusals, as transformers itself writes the config.json ----------------------------------------------------

TINY = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)


@pytest.mark.parametrize("rope", [
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    {"rope_type": "dynamic", "factor": 2.0},
])
def test_unsupported_rope_type_refused_in_one_line(tmp_path, rope):
    transformers.LlamaConfig(**TINY, rope_parameters=dict(rope)).save_pretrained(tmp_path)
    with pytest.raises(InputError) as info:
        load_pretrained(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "config.json") in message and "'rope_parameters'" in message
    assert f"rope_type {rope['rope_type']!r}" in message
    assert "supported rope types: 'default', 'linear', 'llama3'" in message


def test_unknown_architecture_refused_with_the_supported_list(tmp_path):
    transformers.MistralConfig(**TINY, architectures=["MistralForCausalLM"]).save_pretrained(tmp_path)
    with pytest.raises(InputError) as info:
        load_pretrained(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "config.json") in message and "MistralForCausalLM" in message
    for supported in ("Qwen2ForCausalLM (model_type 'qwen2')", "Qwen3ForCausalLM (model_type 'qwen3')",
                      "LlamaForCausalLM (model_type 'llama')"):
        assert supported in message
