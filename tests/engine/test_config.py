"""ModelConfig: validation, and the HF config.json mapping in both rope styles (transformers 4 and 5)."""

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
])
def test_validation_messages(kwargs, words):
    with pytest.raises(ValueError) as info:
        ModelConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


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


@pytest.mark.parametrize("base", [QWEN2, LLAMA], ids=["qwen2", "llama"])
def test_round_trip(base):
    config = ModelConfig.from_hf_dict(base)
    d = json.loads(json.dumps(config.to_hf_dict()))  # through JSON, as on disk
    assert ModelConfig.from_hf_dict(d) == config
    assert d["rope_theta"] == d["rope_parameters"]["rope_theta"] == config.rope_theta
    assert d["rope_parameters"]["rope_type"] == "default"
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


@pytest.mark.parametrize("key, params, kind", [
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}, "yarn"),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}, "llama3"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "linear"),
    ("rope_scaling", {"type": "default", "factor": 2.0}, "factor"),
])
def test_rope_scaling_refused(key, params, kind):
    with pytest.raises(ValueError) as info:
        ModelConfig.from_hf_dict({**LLAMA, key: params}, source="ckpt/config.json")
    message = str(info.value)
    assert "ckpt/config.json" in message and repr(key) in message and kind in message


@pytest.mark.parametrize("change, words", [
    ({"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
     ["my/config.json", "MistralForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM"]),
    ({"architectures": None, "model_type": "gemma"}, ["my/config.json", "'gemma'", "supported"]),
    ({"architectures": ["LlamaForCausalLM"], "model_type": "qwen2"}, ["disagrees"]),
    ({"mlp_bias": True}, ["'mlp_bias'"]),
    ({"attention_bias": True}, ["'attention_bias'", "o_proj"]),
    ({"hidden_act": "gelu"}, ["'hidden_act'", "gelu"]),
    ({"head_dim": 16}, ["'head_dim'", "16", "8"]),
    ({"intermediate_size": None}, ["intermediate_size"]),
    ({"num_attention_heads": 5}, ["my/config.json", "hidden_size (48)", "num_heads (5)"]),
])
def test_refusals_name_file_and_field(change, words):
    d = {**LLAMA, **change}
    d = {k: v for k, v in d.items() if v is not None or k not in ("architectures", "intermediate_size")}
    with pytest.raises(ValueError) as info:
        ModelConfig.from_hf_dict(d, source="my/config.json")
    for word in words:
        assert word in str(info.value)


def test_qwen2_sliding_window_refused_but_inert_window_size_accepted():
    ModelConfig.from_hf_dict({**QWEN2, "use_sliding_window": False, "sliding_window": 32})
    with pytest.raises(ValueError, match="use_sliding_window"):
        ModelConfig.from_hf_dict({**QWEN2, "use_sliding_window": True})
    with pytest.raises(ValueError, match="layer_types"):
        ModelConfig.from_hf_dict({**QWEN2, "layer_types": ["full_attention", "sliding_attention", "full_attention"]})


@pytest.mark.parametrize("base", [QWEN2, LLAMA], ids=["qwen2", "llama"])
def test_transformers_loads_to_hf_dict(base, tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = ModelConfig.from_hf_dict(base)
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(hf).__name__ == config.hf_class.replace("ForCausalLM", "Config")
    assert hf.num_hidden_layers == config.num_layers and hf.num_key_value_heads == config.num_kv_heads
    assert hf.tie_word_embeddings == config.tie_word_embeddings
    theta = hf.rope_parameters["rope_theta"] if getattr(hf, "rope_parameters", None) else hf.rope_theta
    assert theta == config.rope_theta
    # and what transformers writes back reads as the same config
    hf.save_pretrained(tmp_path / "again")
    assert ModelConfig.from_hf_dict(json.loads((tmp_path / "again" / "config.json").read_text())) == config
