"""Hugging Face checkpoints: safetensors in f32/f16/bf16, shards, the tensor layout, errors, atomic writes, and
(with transformers installed) round trips through real Qwen2 and Llama models."""

from __future__ import annotations

import errno
import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from wgrpo.engine import InputError
from wgrpo.engine.config import ModelConfig
from wgrpo.engine.hf import (check_state_dict, expected_shapes, load_checkpoint, read_config, read_state_dict,
                             write_checkpoint, write_directory)
from wgrpo.engine.safetensors_io import read_safetensors

QWEN = dict(architecture="qwen2", vocab_size=37, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2,
            intermediate_size=24, tie_word_embeddings=True, eos_token_id=0, pad_token_id=0)
LLAMA = dict(architecture="llama", vocab_size=29, hidden_size=12, num_layers=1, num_heads=3, num_kv_heads=1,
             intermediate_size=20, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def random_state(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in expected_shapes(config).items()}


def write_bf16(path, tensors: dict[str, np.ndarray]) -> None:
    """A BF16 safetensors file written by hand (8-byte header length, JSON header, little-endian data); values
    are truncated from float32 to their high 16 bits."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        raw = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_expected_shapes_layout():
    qwen = expected_shapes(ModelConfig(**QWEN))
    assert len(qwen) == 1 + 2 * 12 + 1  # embed, 12 per layer (with 3 biases), final norm; tied: no head
    assert qwen["model.layers.1.self_attn.q_proj.weight"] == (16, 16)
    assert qwen["model.layers.1.self_attn.k_proj.weight"] == (8, 16)
    assert qwen["model.layers.0.self_attn.v_proj.bias"] == (8,)
    assert qwen["model.layers.0.mlp.down_proj.weight"] == (16, 24)
    assert "lm_head.weight" not in qwen and "model.layers.0.self_attn.o_proj.bias" not in qwen
    llama = expected_shapes(ModelConfig(**LLAMA))
    assert llama["lm_head.weight"] == (29, 12) and llama["model.layers.0.self_attn.k_proj.weight"] == (4, 12)
    assert not any(name.endswith(".bias") for name in llama)
    assert list(llama)[0] == "model.embed_tokens.weight" and list(llama)[-1] == "lm_head.weight"


@pytest.mark.parametrize("kwargs", [QWEN, LLAMA], ids=["qwen2-tied", "llama"])
def test_f32_round_trip(kwargs, tmp_path):
    config = ModelConfig(**kwargs)
    state = random_state(config)
    write_checkpoint(tmp_path / "ckpt", config, state)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temp dir left beside it
    assert read_config(tmp_path / "ckpt") == config
    raw = read_state_dict(tmp_path / "ckpt")
    assert ("lm_head.weight" in raw) == (not config.tie_word_embeddings)
    loaded_config, loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded_config == config and list(loaded) == list(expected_shapes(config))
    for name, array in state.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
    generation = json.loads((tmp_path / "ckpt" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == config.eos_token_id


def test_f16_and_f64_read_as_f32(tmp_path):
    rng = np.random.default_rng(1)
    half = rng.standard_normal((3, 5)).astype(np.float16)
    double = rng.standard_normal(7)
    save_file({"h": half, "d": double}, str(tmp_path / "m.safetensors"))
    out = read_safetensors(tmp_path / "m.safetensors")
    assert out["h"].dtype == out["d"].dtype == np.float32
    np.testing.assert_array_equal(out["h"], half.astype(np.float32))
    np.testing.assert_array_equal(out["d"], double.astype(np.float32))


def test_bf16_widened_exactly(tmp_path):
    exact = np.array([[1.0, -2.5, 0.0, -0.0], [3.140625, 65280.0, np.inf, -np.inf], [2**-126, 2**-130, 7.0, 0.5]],
                     np.float32)  # every value representable in bf16
    write_bf16(tmp_path / "model.safetensors", {"w": exact, "v": np.arange(5, dtype=np.float32)})
    out = read_state_dict(tmp_path)
    assert out["w"].dtype == np.float32 and out["w"].shape == (3, 4)
    np.testing.assert_array_equal(out["w"], exact)
    assert np.signbit(out["w"][0, 3])
    np.testing.assert_array_equal(out["v"], np.arange(5, dtype=np.float32))
    inexact = np.array([1.0078125 + 2**-9], np.float32)  # low bits dropped by bf16 truncation
    write_bf16(tmp_path / "model.safetensors", {"x": inexact})
    assert read_state_dict(tmp_path)["x"][0] == np.float32(1.0078125)


def test_bf16_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save

    values = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    torch_save({"w": values, "b": values[0].clone()}, str(tmp_path / "model.safetensors"))
    out = read_state_dict(tmp_path)
    np.testing.assert_array_equal(out["w"], values.float().numpy())
    np.testing.assert_array_equal(out["b"], values[0].float().numpy())


def test_sharded_index(tmp_path):
    config = ModelConfig(**LLAMA)
    state = random_state(config, seed=3)
    names = list(state)
    shards = {"model-00001-of-00002.safetensors": names[:5], "model-00002-of-00002.safetensors": names[5:]}
    for shard, shard_names in shards.items():
        save_file({n: state[n] for n in shard_names}, str(tmp_path / shard), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {n: s for s, ns in shards.items() for n in ns}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    _, loaded = load_checkpoint(tmp_path)
    for name in names:
        np.testing.assert_array_equal(loaded[name], state[name])

    index["weight_map"][names[0]] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"{names[0]}.*does not hold"):
        read_state_dict(tmp_path)
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(ValueError, match="shard 'model-00002-of-00002.safetensors'.*missing"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("cut", [3, 40, -5], ids=["length", "header", "data"])
def test_truncated_file_names_the_file(tmp_path, cut):
    path = tmp_path / "model.safetensors"
    save_file({"a": np.ones((8, 8), np.float32)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=str(path)):
        read_state_dict(tmp_path)


def test_truncated_bf16_file_names_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    write_bf16(path, {"a": np.ones((8, 8), np.float32)})
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(ValueError, match=str(path)):
        read_state_dict(tmp_path)


def test_unsupported_dtype_and_missing_weights(tmp_path):
    save_file({"ids": np.arange(4, dtype=np.int32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="'ids'.*I32"):
        read_state_dict(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no model.safetensors"):
        read_state_dict(empty)
    (empty / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        read_state_dict(empty)
    with pytest.raises(ValueError, match="config.json"):
        read_config(empty)
    (empty / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_config(empty)


def test_check_state_dict_messages():
    config = ModelConfig(**LLAMA)
    state = random_state(config)
    del state["model.layers.0.mlp.up_proj.weight"]
    state["model.layers.0.self_attn.k_proj.weight"] = np.zeros((12, 12), np.float32)
    state["model.layers.0.self_attn.k_proj.bias"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError) as info:
        check_state_dict(state, config, source="ckpt/model.safetensors")
    message = str(info.value)
    assert message.startswith("ckpt/model.safetensors")
    assert "missing tensor 'model.layers.0.mlp.up_proj.weight' (expected shape (20, 12))" in message
    assert "'model.layers.0.self_attn.k_proj.weight' has shape (12, 12), expected (4, 12)" in message
    assert "unexpected tensor 'model.layers.0.self_attn.k_proj.bias' with shape (4,)" in message


def test_check_state_dict_drops_harmless_tensors():
    config = ModelConfig(**QWEN)  # tied
    state = random_state(config)
    extra = dict(state)
    extra["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(2, np.float32)
    extra["model.rotary_emb.inv_freq"] = np.ones(2, np.float32)
    extra["lm_head.weight"] = state["model.embed_tokens.weight"].copy()
    assert list(check_state_dict(extra, config)) == list(state)
    extra["lm_head.weight"] = extra["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="lm_head.weight.*tie_word_embeddings"):
        check_state_dict(extra, config)


def test_write_refuses_bad_state_before_touching_disk(tmp_path):
    config = ModelConfig(**LLAMA)
    state = random_state(config)
    state.pop("lm_head.weight")
    with pytest.raises(ValueError, match="missing tensor 'lm_head.weight'"):
        write_checkpoint(tmp_path / "ckpt", config, state)
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="extra_files"):
        write_checkpoint(tmp_path / "ckpt", config, random_state(config), extra_files={"../escape": b""})
    with pytest.raises(ValueError, match="config.json"):
        write_checkpoint(tmp_path / "ckpt", config, random_state(config), extra_files={"config.json": {}})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        write_checkpoint(tmp_path / "file", config, random_state(config))


def test_write_directory_writes_every_kind_of_content_in_order(tmp_path):
    def two_files(path):  # as the tokenizer's writer: its own file and one beside it
        path.write_text("a")
        (path.parent / "b.txt").write_text("from the callable")

    target = tmp_path / "out"
    (target / "old").mkdir(parents=True)
    (target / "old" / "stale.txt").write_text("x")
    files = [("raw.bin", b"\x00\x01"), ("text.txt", "t\u00e9xt"), ("sub/dir/obj.json", {"k": [1, 2]}),
             ("a.txt", two_files), ("b.txt", "replaced")]
    assert write_directory(target, files, what="adapter") == target
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [
        "a.txt", "b.txt", "raw.bin", "sub/dir/obj.json", "text.txt"]  # the old contents are gone
    assert (target / "raw.bin").read_bytes() == b"\x00\x01"
    assert (target / "text.txt").read_text(encoding="utf-8") == "t\u00e9xt"
    assert json.loads((target / "sub" / "dir" / "obj.json").read_text()) == {"k": [1, 2]}
    assert (target / "b.txt").read_text() == "replaced"
    write_directory(target, {"only.txt": "one"})  # a mapping, too
    assert os.listdir(target) == ["only.txt"] and os.listdir(tmp_path) == ["out"]


def test_write_directory_checks_names_and_contents_before_touching_disk(tmp_path):
    for name in ("../escape", "/abs", "", "a/../../b"):
        with pytest.raises(ValueError, match="relative path inside"):
            write_directory(tmp_path / "out", [("ok.txt", "x"), (name, "x")])
    with pytest.raises(TypeError, match="'n.txt' must be bytes, str, a dict/list .* got int"):
        write_directory(tmp_path / "out", {"ok.txt": "x", "n.txt": 3})
    assert not os.listdir(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'file'}: exists and is not a directory; cannot write the "
                                         rf"adapter there"):
        write_directory(tmp_path / "file", {"a.txt": "x"}, what="adapter")
    assert os.listdir(tmp_path) == ["file"] and (tmp_path / "file").read_text() == "x"


def test_write_directory_reports_a_full_disk_and_keeps_what_was_there(tmp_path):
    from wgrpo.engine import CheckpointWriteError

    def disk_full(path):
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    target = tmp_path / "lora"
    with pytest.raises(CheckpointWriteError) as info:
        write_directory(target, {"a.txt": "x", "b.bin": disk_full}, what="adapter")
    assert str(info.value) == f"no space left on device (ENOSPC) while writing {target}/b.bin; no adapter was written"
    assert info.value.errno == errno.ENOSPC and info.value.path == str(target / "b.bin")
    assert not os.listdir(tmp_path)
    write_directory(target, {"a.txt": "old"})
    with pytest.raises(CheckpointWriteError, match=r"^no space left .*; the previous adapter is unchanged$"):
        write_directory(target, {"a.txt": "new", "b.bin": disk_full}, what="adapter")
    assert os.listdir(tmp_path) == ["lora"] and os.listdir(target) == ["a.txt"]
    assert (target / "a.txt").read_text() == "old"


def test_atomic_write_keeps_previous_checkpoint_on_failure(tmp_path):
    config = ModelConfig(**LLAMA)
    old_state, new_state = random_state(config, seed=1), random_state(config, seed=2)
    target = tmp_path / "ckpt"
    write_checkpoint(target, config, old_state, extra_files={"trainer_state/state.json": {"step": 1}})

    def crash(path):
        path.write_bytes(b"half written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_checkpoint(target, config, new_state, extra_files={"trainer_state/state.json": {"step": 2},
                                                                  "trainer_state/optimizer.bin": crash})
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert json.loads((target / "trainer_state" / "state.json").read_text()) == {"step": 1}
    assert not (target / "trainer_state" / "optimizer.bin").exists()
    np.testing.assert_array_equal(load_checkpoint(target)[1]["lm_head.weight"], old_state["lm_head.weight"])

    write_checkpoint(target, config, new_state, extra_files={"notes.txt": "second"})
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert (target / "notes.txt").read_text() == "second" and not (target / "trainer_state").exists()
    np.testing.assert_array_equal(load_checkpoint(target)[1]["lm_head.weight"], new_state["lm_head.weight"])


def test_write_with_tokenizer(tmp_path):
    from wgrpo.engine.hf import load_tokenizer
    from wgrpo.engine.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["<think>1+1=2</think><answer>2</answer> hello world"] * 4, vocab_size=270)
    config = ModelConfig(**{**QWEN, "vocab_size": tokenizer.get_vocab_size()})
    write_checkpoint(tmp_path / "ckpt", config, random_state(config), tokenizer=tokenizer)
    assert load_tokenizer(tmp_path / "ckpt").encode("hello 42").ids == tokenizer.encode("hello 42").ids
    tokenizer_config = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == tokenizer_config["pad_token"] == "<|endoftext|>"
    bad = ModelConfig(**{**QWEN, "vocab_size": 1000, "eos_token_id": 999})
    with pytest.raises(ValueError, match="eos_token_id = 999"):
        write_checkpoint(tmp_path / "bad", config=bad, state_dict=random_state(bad), tokenizer=tokenizer)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


# ---- oracle: transformers ----------------------------------------------------------------------------------------

def _tiny_hf_model(kind: str):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    common = dict(vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=40, max_position_embeddings=64)
    if kind == "qwen2":
        hf_config = transformers.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1e6)
        return torch, transformers, transformers.Qwen2ForCausalLM(hf_config)
    hf_config = transformers.LlamaConfig(**common, tie_word_embeddings=False, rope_theta=5e5)
    return torch, transformers, transformers.LlamaForCausalLM(hf_config)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_transformers_round_trip(kind, tmp_path):
    torch, transformers, model = _tiny_hf_model(kind)
    with torch.no_grad():  # make biases and norms non-trivial so a dropped or swapped tensor shows
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)

    config = read_config(tmp_path / "hf")
    assert config.architecture == kind and config.num_layers == 2 and config.num_kv_heads == 2
    assert config.rope_theta == (1e6 if kind == "qwen2" else 5e5)
    assert config.tie_word_embeddings == (kind == "qwen2") and config.attention_bias == (kind == "qwen2")
    state = check_state_dict(read_state_dict(tmp_path / "hf"), config, source="hf")
    reference = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    for name, array in state.items():
        np.testing.assert_array_equal(array, reference[name], err_msg=name)

    write_checkpoint(tmp_path / "ours", config, state)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
    assert type(reloaded).__name__ == type(model).__name__
    assert reloaded.config.tie_word_embeddings == model.config.tie_word_embeddings
    ours = reloaded.state_dict()
    assert sorted(ours) == sorted(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(ours[name], tensor), name
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


# ---- refused on load: non-finite weights, a tokenizer that does not fit ----------------------------------------

def test_nan_and_inf_weights_are_refused_on_load(tmp_path):
    config = ModelConfig(**LLAMA)
    state = random_state(config)
    state["model.layers.0.mlp.up_proj.weight"][[0, 3, 7], [1, 1, 2]] = np.nan
    write_checkpoint(tmp_path / "nan", config, state)
    path = tmp_path / "nan" / "model.safetensors"
    with pytest.raises(InputError, match=rf"^{path}: tensor 'model.layers.0.mlp.up_proj.weight' has 3 NaN values "):
        load_checkpoint(tmp_path / "nan")
    assert np.isnan(read_state_dict(tmp_path / "nan")["model.layers.0.mlp.up_proj.weight"]).sum() == 3  # raw read

    state = random_state(config)
    state["lm_head.weight"][2, 5] = -np.inf
    state["lm_head.weight"][4, 0] = np.nan
    write_bf16(tmp_path / "model.safetensors", state)  # bf16 keeps NaN and infinities through the widening
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    with pytest.raises(InputError, match=r"tensor 'lm_head.weight' has 1 NaN value and 1 infinite value"):
        load_checkpoint(tmp_path)


def test_non_finite_f16_in_a_shard_names_the_shard(tmp_path):
    config = ModelConfig(**LLAMA)
    state = {name: array.astype(np.float16) for name, array in random_state(config).items()}
    state["model.norm.weight"][0] = np.inf
    names = list(state)
    save_file({n: state[n] for n in names[:4]}, str(tmp_path / "a.safetensors"))
    save_file({n: state[n] for n in names[4:]}, str(tmp_path / "b.safetensors"))
    weight_map = {n: "a.safetensors" if i < 4 else "b.safetensors" for i, n in enumerate(names)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
    with pytest.raises(InputError, match=rf"^{tmp_path / 'b.safetensors'}: tensor 'model.norm.weight' has 1 "
                                         rf"infinite value"):
        load_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def small_tokenizer():
    from wgrpo.engine.tokenizer import train_tokenizer

    return train_tokenizer(["<think>1+1=2</think><answer>2</answer> hello world"] * 4, vocab_size=270)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path, small_tokenizer):
    from wgrpo.engine.hf import load_tokenizer
    from wgrpo.engine.model import load_pretrained
    from wgrpo.engine.tokenizer import save_tokenizer

    size = small_tokenizer.get_vocab_size()
    small = ModelConfig(**{**QWEN, "vocab_size": size - 3})
    with pytest.raises(InputError, match=rf"write_checkpoint: tokenizer: the tokenizer has {size} tokens with ids "
                                         rf"up to {size - 1} .* write_checkpoint: config has vocab_size {size - 3}"):
        write_checkpoint(tmp_path / "ckpt", small, random_state(small), tokenizer=small_tokenizer)
    assert not os.listdir(tmp_path)

    write_checkpoint(tmp_path / "ckpt", small, random_state(small))  # then a tokenizer of another model beside it
    save_tokenizer(small_tokenizer, tmp_path / "ckpt")
    expected = (rf"^{tmp_path / 'ckpt' / 'tokenizer.json'}: the tokenizer has {size} tokens with ids up to "
                rf"{size - 1} \(.*\), but {tmp_path / 'ckpt' / 'config.json'} has vocab_size {size - 3}")
    with pytest.raises(InputError, match=expected):
        load_pretrained(tmp_path / "ckpt")  # refused before any weight is read or any device is made
    with pytest.raises(InputError, match=expected):
        load_tokenizer(tmp_path / "ckpt", read_config(tmp_path / "ckpt"))
    assert load_tokenizer(tmp_path / "ckpt").get_vocab_size() == size  # without a config, nothing is checked


def test_an_added_token_outside_the_vocabulary_is_refused(small_tokenizer):
    from tokenizers import Tokenizer

    from wgrpo.engine.hf import check_tokenizer_fits

    size = small_tokenizer.get_vocab_size()
    tokenizer = Tokenizer.from_str(small_tokenizer.to_str())
    tokenizer.add_special_tokens(["<|im_end|>"])
    exact = ModelConfig(**{**QWEN, "vocab_size": size})
    with pytest.raises(InputError, match=rf"ids up to {size} \('<\|im_end\|>'\).* has vocab_size {size}:"):
        check_tokenizer_fits(tokenizer, exact, "tok.json", "config.json")
    check_tokenizer_fits(tokenizer, ModelConfig(**{**QWEN, "vocab_size": size + 1}))
    check_tokenizer_fits(small_tokenizer, ModelConfig(**{**QWEN, "vocab_size": size + 64}))  # padded: fine


def test_file_errors_are_input_errors(tmp_path):
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'config.json'}: not valid JSON"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**ModelConfig(**LLAMA).to_hf_dict(), "num_key_value_heads": 2}))
    with pytest.raises(InputError, match=rf"^{tmp_path / 'config.json'}: ModelConfig: num_heads \(3\) must be "
                                         rf"divisible by num_kv_heads \(2\)"):
        read_config(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(InputError, match=rf"^{tmp_path / 'model.safetensors'}: not a valid safetensors file"):
        read_state_dict(tmp_path)
    with pytest.raises(InputError, match="no such safetensors file"):
        read_safetensors(tmp_path / "absent.safetensors")
    if os.geteuid() != 0:  # root reads everything
        (tmp_path / "model.safetensors").chmod(0)
        with pytest.raises(InputError, match=rf"^{tmp_path / 'model.safetensors'}: cannot read"):
            read_state_dict(tmp_path)
    with pytest.raises(InputError, match="does not match the config"):
        check_state_dict({}, ModelConfig(**LLAMA))


def test_a_checkpoint_does_not_replace_a_directory_holding_other_things(tmp_path):
    """A checkpoint replaces its directory whole: one holding a run (metrics, other checkpoints) is refused by
    name before anything is written; a previous checkpoint's own files are replaced as before."""
    from wgrpo.engine.hf import foreign_entries

    run = tmp_path / "run"
    (run / "checkpoint-5").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "config.json").write_text("{}")
    assert foreign_entries(run) == ["checkpoint-5", "metrics.jsonl"]
    with pytest.raises(InputError, match=r"run: holds checkpoint-5, metrics.jsonl, which writing the checkpoint "
                                         r"there would delete"):
        write_directory(run, {"config.json": {}}, checkpoint=True)
    assert sorted(os.listdir(run)) == ["checkpoint-5", "config.json", "metrics.jsonl"]
    own = tmp_path / "model"
    write_directory(own, {"config.json": {}, "model-00001-of-00002.safetensors": b""}, checkpoint=True)
    write_directory(own, {"config.json": {"v": 2}, "trainer_state/state.json": {}}, checkpoint=True)
    assert sorted(os.listdir(own)) == ["config.json", "trainer_state"]
