"""ModelConfig: validation, and the HF config.json mapping of Qwen2, Qwen3 and Llama (with linear and llama3 RoPE
scaling) in both rope styles (transformers 4 and 5)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from wgrpo.engine.config import ModelConfig

QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151, "hidden_size": 64,
    "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 96,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "hidden_act": "silu",
    "bos_token_id": None, "eos_token_id": 150, "use_sliding_window": False, "sliding_window": 4096,
}
LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 100, "hidden_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 3, "intermediate_size": 80,
    "rope_theta": 500000.0, "attention_bias": False, "mlp_bias": False, "bos_token_id": 1, "eos_token_id": [2, 3],
}
# as transformers 5 writes a Qwen3 config.json: head_dim 16 != hidden_size / heads = 8
QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 120, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "intermediate_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    "attention_bias": False, "hidden_act": "silu", "layer_types": ["full_attention", "full_attention"],
    "max_window_layers": 28, "sliding_window": None, "use_sliding_window": False,
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
}
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
# Llama 3.2 style: llama3 RoPE scaling and a head_dim that hidden_size / heads does not give
LLAMA32 = {**LLAMA, "head_dim": 12, "max_position_embeddings": 64, "rope_scaling": LLAMA3_ROPE}
LINEAR = {**LLAMA, "rope_scaling": {"type": "linear", "factor": 2.0}}
BASES = {"qwen2": QWEN2, "llama": LLAMA, "qwen3": QWEN3, "llama3-rope": LLAMA32, "linear-rope": LINEAR}


def test_defaults_valid_and_every_field_has_help():
    config = ModelConfig()
    assert config.head_dim == config.hidden_size // config.num_heads
    assert config.attention_bias is True  # qwen2 default
    assert ModelConfig(architecture="llama").attention_bias is False
    for f in dataclasses.fields(ModelConfig):
        assert f.metadata.get("help"), f.name
        assert f.default is not dataclasses.MISSING, f.name
    assert set(ModelConfig.field_help()) == {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize("kwargs, words", [
    (dict(hidden_size=100, num_heads=3), ["hidden_size (100)", "num_heads (3)"]),
    (dict(num_heads=4, num_kv_heads=3), ["num_heads (4)", "num_kv_heads (3)"]),
    (dict(vocab_size=0), ["vocab_size", "positive"]),
    (dict(num_layers=-1), ["num_layers", "positive"]),
    (dict(hidden_size=True), ["hidden_size"]),
    (dict(rope_theta=0.0), ["rope_theta"]),
    (dict(architecture="gpt2"), ["architecture", "'gpt2'", "llama", "qwen2"]),
    (dict(architecture="qwen2", attention_bias=False), ["attention_bias", "Qwen2"]),
    (dict(architecture="llama", attention_bias=True), ["attention_bias", "o_proj"]),
    (dict(vocab_size=10, eos_token_id=10), ["eos_token_id", "10"]),
    (dict(pad_token_id=-1), ["pad_token_id"]),
    (dict(hidden_size=12, num_heads=4, num_kv_heads=4), ["head_dim", "even"]),
    (dict(explicit_head_dim=6, num_heads=4, num_kv_heads=4, hidden_size=32), []),  # no error
    (dict(explicit_head_dim=8, num_heads=3, num_kv_heads=3, hidden_size=100), []),  # C need not divide by H then
    (dict(explicit_head_dim=7), ["head_dim", "even"]),
    (dict(explicit_head_dim=0), ["explicit_head_dim", "positive"]),
    (dict(architecture="qwen3", attention_bias=True), ["attention_bias", "o_proj", "Qwen3ForCausalLM"]),
    (dict(rope_type="yarn"), ["rope_type", "'yarn'", "llama3", "linear"]),
    (dict(rope_type="linear", rope_factor=0.0), ["rope_factor", "positive"]),
    (dict(rope_factor=2.0), ["rope_factor", "'default'"]),
    (dict(rope_type="linear", rope_factor=2.0, rope_low_freq_factor=2.0), ["rope_low_freq_factor", "'linear'"]),
    (dict(rope_type="llama3", rope_low_freq_factor=4.0, rope_high_freq_factor=4.0),
     ["rope_high_freq_factor", "rope_low_freq_factor"]),
    (dict(rope_type="llama3", rope_original_max_position_embeddings=0), ["rope_original_max_position_embeddings"]),
])
def test_validation_messages(kwargs, words):
    if not words:
        assert ModelConfig(**kwargs).head_dim == kwargs["explicit_head_dim"]
        return
    with pytest.raises(ValueError) as info:
        ModelConfig(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_from_hf_qwen2():
    config = ModelConfig.from_hf_dict(QWEN2)
    assert (config.architecture, config.num_layers, config.num_heads, config.num_kv_heads) == ("qwen2", 3, 8, 2)
    assert config.attention_bias is True and config.tie_word_embeddings is True
    assert config.rope_theta == 10000.0 and config.rms_norm_eps == 1e-5 and config.head_dim == 8
    assert config.eos_token_id == 150 and config.eos_token_ids == (150,)


def test_from_hf_llama_and_model_type_only():
    config = ModelConfig.from_hf_dict(LLAMA)
    assert config.architecture == "llama" and config.attention_bias is False and config.rope_theta == 500000.0
    assert config.eos_token_ids == (2, 3) and config.tie_word_embeddings is False
    d = {k: v for k, v in LLAMA.items() if k != "architectures"}
    assert ModelConfig.from_hf_dict(d) == config
    d.pop("num_key_value_heads")
    assert ModelConfig.from_hf_dict(d).num_kv_heads == 6  # MHA when absent, as transformers does


def test_from_hf_qwen3():
    config = ModelConfig.from_hf_dict(QWEN3)
    assert (config.architecture, config.hf_class, config.head_dim) == ("qwen3", "Qwen3ForCausalLM", 16)
    assert config.qk_norm and config.attention_bias is False and config.rope_theta == 1e6
    assert config.tie_word_embeddings is True and config.rope_type == "default"
    # a Qwen3 config.json without head_dim gets transformers' Qwen3Config default, not hidden_size / heads
    assert ModelConfig.from_hf_dict({k: v for k, v in QWEN3.items() if k != "head_dim"}).head_dim == 128
    assert not ModelConfig.from_hf_dict(QWEN2).qk_norm and not ModelConfig.from_hf_dict(LLAMA).qk_norm


def test_from_hf_llama_head_dim_and_rope_scaling():
    config = ModelConfig.from_hf_dict(LLAMA32)
    assert config.head_dim == 12 and config.hidden_size == 48 and config.num_heads == 6
    assert config.rope_parameters == {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 16}
    linear = ModelConfig.from_hf_dict(LINEAR)
    assert linear.rope_parameters == {"rope_type": "linear", "rope_theta": 500000.0, "factor": 2.0}
    assert ModelConfig.from_hf_dict(LLAMA).rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}
    # transformers 5 spelling, and llama3 without original_max_position_embeddings (max_position_embeddings then)
    v5 = {**LLAMA, "rope_theta": None, "rope_parameters": {**LLAMA3_ROPE, "rope_theta": 5e5}}
    assert ModelConfig.from_hf_dict(v5) == ModelConfig.from_hf_dict({**LLAMA, "rope_scaling": LLAMA3_ROPE})
    rope = {k: v for k, v in LLAMA3_ROPE.items() if k != "original_max_position_embeddings"}
    no_context = ModelConfig.from_hf_dict({**LLAMA, "max_position_embeddings": 77, "rope_scaling": rope})
    assert no_context.rope_parameters["original_max_position_embeddings"] == 77


def test_derived_sizes_follow_replace_and_explicit_ones_stay():
    derived = ModelConfig(hidden_size=32, num_heads=4, num_kv_heads=2)
    assert derived.head_dim == 8 and derived.explicit_head_dim is None
    assert dataclasses.replace(derived, hidden_size=128).head_dim == 32
    assert ModelConfig(hidden_size=32, num_heads=4, num_kv_heads=2, explicit_head_dim=8) == derived
    qwen3 = ModelConfig.from_hf_dict(QWEN3)
    assert qwen3.explicit_head_dim == 16 and dataclasses.replace(qwen3, hidden_size=64).head_dim == 16
    llama3 = ModelConfig(architecture="llama", rope_type="llama3", rope_factor=8.0, max_position_embeddings=64)
    assert llama3.rope_parameters["original_max_position_embeddings"] == 64
    longer = dataclasses.replace(llama3, max_position_embeddings=256)
    assert longer.rope_parameters["original_max_position_embeddings"] == 256
    pinned = dataclasses.replace(llama3, rope_original_max_position_embeddings=16, max_position_embeddings=256)
    assert dataclasses.replace(pinned, max_position_embeddings=512).rope_parameters[
        "original_max_position_embeddings"] == 16


def test_num_parameters_counts_head_dim_and_qk_norms():
    config = ModelConfig.from_hf_dict(QWEN3)
    c, q, kv, f, v = 32, 4 * 16, 2 * 16, 64, 120
    per_layer = c * q + 2 * c * kv + q * c + 2 * 16 + 3 * c * f + 2 * c
    assert config.num_parameters() == v * c + 2 * per_layer + c
    untied = ModelConfig.from_hf_dict({**LLAMA32, "tie_word_embeddings": False})
    c, q, kv, f, v = 48, 6 * 12, 3 * 12, 80, 100
    assert untied.num_parameters() == 2 * v * c + 2 * (2 * c * q + 2 * c * kv + 3 * c * f + 2 * c) + c


@pytest.mark.parametrize("name", sorted(BASES))
def test_round_trip(name):
    config = ModelConfig.from_hf_dict(BASES[name])
    d = json.loads(json.dumps(config.to_hf_dict()))  # through JSON, as on disk
    assert ModelConfig.from_hf_dict(d) == config
    assert d["rope_theta"] == d["rope_parameters"]["rope_theta"] == config.rope_theta
    assert d["rope_parameters"] == config.rope_parameters and d["head_dim"] == config.head_dim
    if config.rope_type == "default":
        assert d["rope_scaling"] is None
    else:
        assert d["rope_scaling"] == {k: v for k, v in config.rope_parameters.items() if k != "rope_theta"}
    assert d["torch_dtype"] == d["dtype"] == "float32" and d["hidden_act"] == "silu"


def test_rope_styles():
    d = dict(QWEN2)
    assert ModelConfig.from_hf_dict({**d, "rope_theta": 1e6}).rope_theta == 1e6
    v5 = {**d, "rope_parameters": {"rope_type": "default", "rope_theta": 2e6}}
    assert ModelConfig.from_hf_dict(v5).rope_theta == 2e6
    both = {**d, "rope_theta": 3e6, "rope_parameters": {"rope_type": "default", "rope_theta": 3e6}, "rope_scaling": None}
    assert ModelConfig.from_hf_dict(both).rope_theta == 3e6
    with pytest.raises(ValueError, match="disagrees"):
        ModelConfig.from_hf_dict({**d, "rope_theta": 1.0e4, "rope_parameters": {"rope_type": "default", "rope_theta": 5e4}})


@pytest.mark.parametrize("key, params", [
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 8}),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}),
    ("rope_scaling", {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]}),
])
def test_unsupported_rope_types_refused_naming_field_type_and_the_supported(key, params):
    with pytest.raises(ValueError) as info:
        ModelConfig.from_hf_dict({**LLAMA, key: params}, source="ckpt/config.json")
    message = str(info.value)
    rope_type = params.get("rope_type", params.get("type"))
    assert "\n" not in message and "ckpt/config.json" in message and repr(key) in message
    assert repr(rope_type) in message and "supported rope types: 'default', 'linear', 'llama3'" in message


@pytest.mark.parametrize("key, params, words", [
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}, ["llama3", "'high_freq_factor'"]),
    ("rope_scaling", {"type": "linear"}, ["linear", "missing 'factor'"]),
    ("rope_scaling", {"type": "default", "factor": 2.0}, ["factor", "'default'"]),
    ("rope_scaling", {"type": "linear", "factor": -1.0}, ["rope_factor", "positive"]),
    ("rope_parameters", {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5},
     ["partial_rotary_factor"]),
    ("rope_scaling", ["linear"], ["'rope_scaling'", "object"]),
])
def test_bad_rope_settings_refused(key, params, words):
    with pytest.raises(ValueError) as info:
        ModelConfig.from_hf_dict({**LLAMA, "rope_theta": None, key: params}, source="ckpt/config.json")
    message = str(info.value)
    assert "ckpt/config.json" in message
    for word in words:
        assert word in message


def test_rope_scaling_and_rope_parameters_must_agree():
    d = {**LLAMA, "rope_scaling": {"type": "linear", "factor": 2.0},
         "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}}
    assert ModelConfig.from_hf_dict(d).rope_factor == 2.0
    with pytest.raises(ValueError, match="'rope_scaling'.*disagrees with 'rope_parameters'"):
        ModelConfig.from_hf_dict({**d, "rope_parameters": {"rope_type": "linear", "factor": 4.0}})
    with pytest.raises(ValueError, match="disagrees"):
        ModelConfig.from_hf_dict({**d, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}})


@pytest.mark.parametrize("change, words", [
    ({"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
     ["my/config.json", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM"]),
    ({"architectures": None, "model_type": "gemma"}, ["my/config.json", "'gemma'", "supported"]),
    ({"architectures": ["LlamaForCausalLM"], "model_type": "qwen2"}, ["disagrees"]),
    ({"mlp_bias": True}, ["'mlp_bias'"]),
    ({"attention_bias": True}, ["'attention_bias'", "o_proj"]),
    ({"hidden_act": "gelu"}, ["'hidden_act'", "gelu"]),
    ({"head_dim": 15}, ["my/config.json", "head_dim", "15", "even"]),
    ({"intermediate_size": None}, ["intermediate_size"]),
    ({"num_attention_heads": 5}, ["my/config.json", "hidden_size (48)", "num_heads (5)"]),
])
def test_refusals_name_file_and_field(change, words):
    d = {**LLAMA, **change}
    d = {k: v for k, v in d.items() if v is not None or k not in ("architectures", "intermediate_size")}
    with pytest.raises(ValueError) as info:
        ModelConfig.from_hf_dict(d, source="my/config.json")
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("change, words", [
    ({"attention_bias": True}, ["'attention_bias'", "Qwen3ForCausalLM", "o_proj"]),
    ({"use_sliding_window": True}, ["'use_sliding_window'"]),
    ({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe"}, ["Qwen3MoeForCausalLM", "supported"]),
])
def test_qwen3_refusals(change, words):
    with pytest.raises(ValueError) as info:
        ModelConfig.from_hf_dict({**QWEN3, **change}, source="q3/config.json")
    for word in ["q3/config.json", *words]:
        assert word in str(info.value)


def test_qwen2_sliding_window_refused_but_inert_window_size_accepted():
    ModelConfig.from_hf_dict({**QWEN2, "use_sliding_window": False, "sliding_window": 32})
    with pytest.raises(ValueError, match="use_sliding_window"):
        ModelConfig.from_hf_dict({**QWEN2, "use_sliding_window": True})
    with pytest.raises(ValueError, match="layer_types"):
        ModelConfig.from_hf_dict({**QWEN2, "layer_types": ["full_attention", "sliding_attention", "full_attention"]})


@pytest.mark.parametrize("name", sorted(BASES))
def test_transformers_loads_to_hf_dict(name, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = ModelConfig.from_hf_dict(BASES[name])
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(hf).__name__ == config.hf_class.replace("ForCausalLM", "Config")
    assert hf.num_hidden_layers == config.num_layers and hf.num_key_value_heads == config.num_kv_heads
    assert hf.tie_word_embeddings == config.tie_word_embeddings and hf.head_dim == config.head_dim
    theta = hf.rope_parameters["rope_theta"] if getattr(hf, "rope_parameters", None) else hf.rope_theta
    assert theta == config.rope_theta
    rope = getattr(hf, "rope_parameters", None) or {"rope_type": "default", **(hf.rope_scaling or {})}
    assert {k: rope[k] for k in config.rope_parameters if k != "rope_theta"} == \
        {k: v for k, v in config.rope_parameters.items() if k != "rope_theta"}
    with torch.device("meta"):  # the parameter count of the model transformers builds, without allocating it
        hf_model = transformers.AutoModelForCausalLM.from_config(hf)
    assert sum(p.numel() for p in hf_model.parameters()) == config.num_parameters()
    # and what transformers writes back reads as the same config
    hf.save_pretrained(tmp_path / "again")
    assert ModelConfig.from_hf_dict(json.loads((tmp_path / "again" / "config.json").read_text())) == config
