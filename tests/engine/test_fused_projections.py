"""Fused projections: each layer's q/k/v weights (and biases) held in one buffer and gate/up in another, each name a
view of it, run as one matmul each. Against the same model held as separate tensors (which runs unfused): logits,
every gradient, LoRA, KV-cached decoding, checkpoints, an optimizer step, the fallbacks, and the dispatches saved."""

from __future__ import annotations

import numpy as np
import pytest

from wgrpo.engine import (AdamW, LoraConfig, Model, ModelConfig, Tensor, attach_lora, generate, load_pretrained,
                          no_grad, ops)
from wgrpo.engine.dtypes import BFLOAT16, convert
from wgrpo.engine.fused import fused_groups, projection_groups
from wgrpo.engine.kv_cache import KVCache
from wgrpo.engine.model import parameter_shapes

CONFIGS = {
    "qwen2 (biases)": ModelConfig(vocab_size=96, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                                  intermediate_size=192, max_position_embeddings=32),
    "llama (tied)": ModelConfig(architecture="llama", vocab_size=96, hidden_size=128, num_layers=2, num_heads=4,
                                num_kv_heads=2, intermediate_size=192, max_position_embeddings=32,
                                tie_word_embeddings=True),
    "qwen3 (qk_norm)": ModelConfig(architecture="qwen3", vocab_size=96, hidden_size=64, num_layers=2, num_heads=4,
                                   num_kv_heads=1, intermediate_size=96, max_position_embeddings=32,
                                   explicit_head_dim=32),
}
# views of k begin 1152 bytes in (q is 24 x 24 floats), off a 256-byte boundary; gate's 36 x 20 floats likewise
MISALIGNED = ModelConfig(architecture="llama", vocab_size=50, hidden_size=20, num_layers=2, num_heads=2,
                         num_kv_heads=1, intermediate_size=36, max_position_embeddings=16)
IDS = np.random.default_rng(0).integers(0, 50, (2, 9))
TIGHT = dict(rtol=1e-5, atol=1e-6)  # one matmul sums dx over all of q, k and v: a reordering of f32 sums
CHAINED = dict(rtol=1e-4, atol=1e-5)  # tests.tolerances' f32: LoRA's gradients go through more of those sums


def random_state(config, seed=1) -> dict[str, np.ndarray]:
    """Every tensor random (biases and norms too, so that each one matters)."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * (0.3 if len(shape) == 1 else 0.1) + (len(shape) == 1)).astype(
        np.float32) for name, shape in parameter_shapes(config).items()}


def separate(model: Model) -> Model:
    """The same model with every tensor in a buffer of its own: it runs unfused."""
    return Model(model.config, {name: Tensor.from_numpy(p.numpy(), model.device) for name, p in model.params.items()})


def is_fused(model: Model, layer: int) -> tuple[bool, bool]:
    """(q/k/v joined, gate/up joined) of one layer."""
    return tuple(Tensor.join_rows([model.params[m + ".weight"] for m in group]) is not None
                 for group in projection_groups(layer))


def loss_of(model, ids=IDS):
    targets = Tensor.from_numpy(ids[:, 1:].astype(np.int32), model.device)
    return ops.cross_entropy(model(ids[:, :-1]), targets)


def randomize_adapters(model, seed=4):
    rng = np.random.default_rng(seed)
    model.adapters.load_state_dict({k: rng.standard_normal(v.shape).astype(np.float32) * 0.2
                                    for k, v in model.adapters.state_dict().items()})


def both(config, device, lora=None):
    fused = Model.from_numpy(config, random_state(config), device)
    plain = separate(fused)
    if lora is not None:
        for model in (fused, plain):
            attach_lora(model, lora, seed=0)
            randomize_adapters(model)
    return fused, plain


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_every_gradient_equal_the_unfused_model(device, name):
    config = CONFIGS[name]
    assert len(fused_groups(config, np.float32, device.max_binding_bytes)) == config.num_layers * (
        3 if config.attention_bias else 2)
    fused, plain = both(config, device)
    assert all(is_fused(fused, i) == (True, True) for i in range(config.num_layers))
    assert not any(any(is_fused(plain, i)) for i in range(config.num_layers))
    with no_grad():
        np.testing.assert_allclose(fused(IDS).numpy(), plain(IDS).numpy(), **TIGHT)
    for model in (fused, plain):
        model.requires_grad_()
        loss_of(model).backward()
    for name_, p in fused.params.items():
        q = plain.params[name_]
        assert p.grad.shape == p.shape and p.grad is not q.grad, name_
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), **TIGHT, err_msg=name_)
    # every gradient in a buffer of its own, so clip_grad_norm_ scales each in place
    blocks = [p.grad.binding()[0] for p in fused.params.values()]
    assert len({id(b) for b in blocks}) == len(blocks)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("targets", ["q_proj,k_proj,v_proj,gate_proj,up_proj", "k_proj,up_proj,o_proj"])
def test_lora_updates_go_into_their_columns(device, name, targets):
    config = CONFIGS[name]
    fused, plain = both(config, device, LoraConfig(r=3, lora_alpha=6, lora_dropout=0.2, target_modules=targets))
    for model in (fused, plain):
        model.train()
        model.adapters.dropout_seed = 7
        for p in model.trainable_parameters():
            p.requires_grad_()
    np.testing.assert_allclose(fused(IDS).numpy(), plain(IDS).numpy(), **TIGHT)
    for model in (fused, plain):
        model.gradient_checkpointing_enable()  # the recomputed layer adds the same updates again
        loss_of(model).backward()
    for key, p in fused.adapters.named_parameters().items():
        q = plain.adapters.named_parameters()[key]
        assert np.abs(p.grad.numpy()).max() > 0, key
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), **CHAINED, err_msg=key)
    with fused.disable_adapters(), plain.disable_adapters(), no_grad():
        np.testing.assert_allclose(fused(IDS).numpy(), plain(IDS).numpy(), **TIGHT)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoding_with_a_kv_cache_gives_the_same_tokens(device, name):
    config = CONFIGS[name]
    fused, plain = both(config, device, LoraConfig(r=2, target_modules="all-linear", lora_dropout=0.0))
    prompts = [[5, 9, 2, 33], [7, 1, 60, 2]]
    runs = [generate(m, prompts, max_new_tokens=8, num_samples=3, seed=3, eos_token_ids=()) for m in (fused, plain)]
    for a, b in zip(*(r.sequences for r in runs)):
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-5, atol=1e-5)


def decode_dispatches(model) -> int:
    """Dispatches of one decode step (one new token of 2 rows) after a prefill of 3."""
    cache = KVCache.for_model(model, 2, 8, np.zeros(2))
    with no_grad():
        model.hidden_states(np.zeros((2, 3), np.int32), None, cache)
        before = model.device.runtime.stats.dispatches
        model.hidden_states(np.zeros((2, 1), np.int32), np.array([3], np.int32), cache)
        return model.device.runtime.stats.dispatches - before


@pytest.mark.parametrize("name,saved", [("qwen2 (biases)", 3), ("llama (tied)", 3), ("qwen3 (qk_norm)", 2)])
def test_fewer_dispatches_per_layer(device, name, saved):
    config = CONFIGS[name]
    fused, plain = both(config, device)
    stats = device.runtime.stats
    counts = []
    for model in (fused, plain):
        with no_grad():
            before = stats.dispatches
            model(IDS)
            counts.append(stats.dispatches - before)
    # q, k, v and RoPE: a matmul and the split that rotates (Qwen3: split, norms, RoPE); gate, up: one matmul
    assert counts[1] - counts[0] == saved * config.num_layers
    # decoding, the split also writes k and v into the cache (not Qwen3's: its norms come between)
    saved_decoding = saved + (0 if config.qk_norm else 1)
    assert decode_dispatches(plain) - decode_dispatches(fused) == saved_decoding * config.num_layers
    for model in (fused, plain):  # LoRA on q/k/v/gate/up: no add per adapter either
        attach_lora(model, LoraConfig(r=2, target_modules="q_proj,k_proj,v_proj,gate_proj,up_proj"))
    assert decode_dispatches(plain) - decode_dispatches(fused) == (saved_decoding + 5) * config.num_layers


def test_state_dict_and_checkpoints_are_unchanged(device, tmp_path):
    config = CONFIGS["qwen2 (biases)"]
    state = random_state(config)
    model = Model.from_numpy(config, state, device)
    assert list(model.params) == list(parameter_shapes(config))
    saved = model.state_dict()
    assert list(saved) == list(state)
    for name, array in state.items():
        assert model.params[name].shape == array.shape
        np.testing.assert_array_equal(saved[name], array, err_msg=name)
    model.save_pretrained(tmp_path / "ckpt")
    loaded, _ = load_pretrained(tmp_path / "ckpt", device)
    assert is_fused(loaded, 1) == (True, True)
    for name, array in loaded.state_dict().items():
        np.testing.assert_array_equal(array, state[name], err_msg=name)
    half = model.to("bfloat16")  # a dtype change goes through the host: fused again, in bfloat16
    assert half.dtype == BFLOAT16 and is_fused(half, 0) == (True, True)
    np.testing.assert_array_equal(half.state_dict()["model.layers.0.mlp.up_proj.weight"],
                                  convert(state["model.layers.0.mlp.up_proj.weight"], BFLOAT16))
    np.testing.assert_array_equal(half.state_dict()["model.layers.0.self_attn.k_proj.bias"],
                                  state["model.layers.0.self_attn.k_proj.bias"])  # vectors stay float32


def test_an_adamw_step_updates_the_views_in_place(device):
    fused = Model.from_numpy(CONFIGS["llama (tied)"], random_state(CONFIGS["llama (tied)"]), device)
    fused.requires_grad_()
    loss_of(fused).backward()
    plain = separate(fused).requires_grad_()
    for name, p in plain.params.items():  # the same gradients, in tensors of their own
        p.grad = Tensor.from_numpy(fused.params[name].grad.numpy(), device)
    before = fused.state_dict()
    for model in (fused, plain):
        AdamW(model.parameters(), lr=1e-2).step()
    assert is_fused(fused, 0) == (True, True)  # still one buffer: the step wrote into the views
    for name, array in fused.state_dict().items():
        assert not np.array_equal(array, before[name]), name
        np.testing.assert_array_equal(array, plain.params[name].numpy(), err_msg=name)
    with no_grad():  # the fused matmul reads what the optimizer wrote
        np.testing.assert_allclose(fused(IDS).numpy(), plain(IDS).numpy(), **TIGHT)


def test_misaligned_views_are_held_apart(device):
    assert fused_groups(MISALIGNED, np.float32, None) == []
    model = Model.from_numpy(MISALIGNED, random_state(MISALIGNED), device)
    assert is_fused(model, 0) == (False, False)
    qwen2 = ModelConfig(vocab_size=50, hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2,
                        intermediate_size=96, max_position_embeddings=16)  # k's bias begins 256 + 128 bytes in
    groups = fused_groups(qwen2, np.float32, None)
    assert groups == [("model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight")]
    model = Model.from_numpy(qwen2, random_state(qwen2), device)
    assert is_fused(model, 0) == (False, True)
    with no_grad():
        np.testing.assert_allclose(model(IDS).numpy(), separate(model)(IDS).numpy(), **TIGHT)


def forward_dispatches(model, ids) -> tuple[int, np.ndarray]:
    stats = model.device.runtime.stats
    with no_grad():
        before = stats.dispatches
        logits = model(ids)
        return stats.dispatches - before, logits.numpy()


def test_over_the_binding_limit_the_projections_run_apart(device, monkeypatch):
    config = CONFIGS["llama (tied)"]
    monkeypatch.setattr(device, "_binding_bytes", 128 << 10)  # q/k/v (256 x 128 floats) fits, gate/up (384) not
    assert fused_groups(config, np.float32, 128 << 10) == [
        tuple(f"model.layers.{i}.self_attn.{m}_proj.weight" for m in "qkv") for i in range(config.num_layers)]
    model = Model.from_numpy(config, random_state(config), device)
    assert is_fused(model, 0) == (True, False)
    plain = separate(model)
    ids = np.random.default_rng(1).integers(0, 96, (5, 30))
    # 24 rows of q/k/v output (256 floats each) fit one binding and run fused; 150 rows would not: unfused
    for rows, saved in ((ids[:2, :12], 2), (ids, 0)):
        (fused_count, fused_logits), (plain_count, plain_logits) = (forward_dispatches(m, rows) for m in (model, plain))
        np.testing.assert_allclose(fused_logits, plain_logits, **TIGHT)
        assert plain_count - fused_count == saved * config.num_layers


def test_replaced_parameters_run_unfused(device):
    config = CONFIGS["qwen2 (biases)"]
    model = Model.from_numpy(config, random_state(config), device)
    reference = separate(model)
    name = "model.layers.1.self_attn.k_proj.bias"
    for m in (model, reference):
        m.params[name] = Tensor.from_numpy(m.params[name].numpy() + 1, device)
    assert is_fused(model, 0) == (True, True)
    (count, logits), (plain_count, plain_logits) = (forward_dispatches(m, IDS) for m in (model, reference))
    np.testing.assert_allclose(logits, plain_logits, **TIGHT)
    assert plain_count - count == 3 + 1  # layer 0 fused; layer 1's q/k/v apart, its gate/up fused
