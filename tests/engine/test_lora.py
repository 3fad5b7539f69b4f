"""LoRA on the engine's model: PEFT's initialization, the forward delta and its gradients, switching adapters
off, PEFT's names and directory format (round trips and refusals), and merging into the base weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wgrpo.engine import (InputError, LoraAdapters, LoraConfig, Model, ModelConfig, Tensor, attach_lora,
                          load_adapter, load_peft_model, load_pretrained, merge_and_unload, merged_state_dict, no_grad,
                          ops, save_adapter)
from wgrpo.engine.dtypes import BFLOAT16, widen
from wgrpo.engine.model import parameter_shapes
from wgrpo.engine.lora import PROJECTIONS, lora_key, merge_lora_weights, target_module_names
from wgrpo.engine.peft_io import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, is_adapter_dir, read_adapter
from wgrpo.engine.safetensors_io import read_safetensors, write_safetensors
from tests.gradcheck import check_gradients
from tests.tolerances import assert_close

CONFIG = ModelConfig(vocab_size=61, hidden_size=24, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=40,
                     max_position_embeddings=32)  # qwen2: q/k/v biases
IDS = np.random.default_rng(3).integers(0, 61, size=(2, 7))


def base_state(seed: int = 1) -> dict[str, np.ndarray]:
    """Weights far from init (so every term of the forward matters), biases non-zero."""
    rng = np.random.default_rng(seed)
    return {name: ((1 if name.endswith("norm.weight") else 0) + 0.2 * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in parameter_shapes(CONFIG).items()}


@pytest.fixture
def model(device):
    return Model.from_numpy(CONFIG, base_state(), device)


def randomize(adapters: LoraAdapters, seed: int = 5, std: float = 0.3) -> None:
    """Non-zero A and B, so the adapters change the logits."""
    rng = np.random.default_rng(seed)
    adapters.load_state_dict({k: (std * rng.standard_normal(t.shape)).astype(np.float32)
                              for k, t in adapters.named_parameters().items()})


def logits(model) -> np.ndarray:
    with no_grad():
        return model(IDS).numpy()


# ---- the config ------------------------------------------------------------------------------------------------

def test_config_defaults_and_scaling():
    config = LoraConfig()
    assert (config.r, config.lora_alpha, config.lora_dropout, config.target_modules) == (16, 32, 0.05, "all-linear")
    assert config.scaling == 2.0
    assert LoraConfig(r=16, lora_alpha=32, use_rslora=True).scaling == 32 / 4
    assert LoraConfig(target_modules="q_proj, v_proj,").target_modules == ("q_proj", "v_proj")
    assert LoraConfig(target_modules=["mlp.up_proj", "model.layers.1.self_attn.o_proj"]).target_modules == (
        "mlp.up_proj", "model.layers.1.self_attn.o_proj")


@pytest.mark.parametrize("kwargs,message", [
    (dict(r=0), "r must be an integer >= 1"),
    (dict(r=2.5), "r must be an integer >= 1"),
    (dict(lora_alpha=0), "lora_alpha must be a finite number > 0"),
    (dict(lora_alpha=float("inf")), "lora_alpha must be a finite number > 0"),
    (dict(lora_dropout=1.0), r"lora_dropout must be in \[0, 1\)"),
    (dict(lora_dropout=-0.1), r"lora_dropout must be in \[0, 1\)"),
    (dict(bias="all"), "bias 'all' is not supported"),
    (dict(target_modules="lm_head"), "unknown module 'lm_head'; valid: q_proj, k_proj, v_proj, o_proj, gate_proj"),
    (dict(target_modules=["q_proj", "embed_tokens"]), "unknown module 'embed_tokens'"),
    (dict(target_modules="mlp"), "unknown module 'mlp'"),
    (dict(target_modules=""), "target_modules is empty"),
    (dict(target_modules=["all-linear", "q_proj"]), "'all-linear' stands alone"),
])
def test_config_refusals(kwargs, message):
    with pytest.raises(InputError, match=message):
        LoraConfig(**kwargs)


def test_targets_resolve_to_modules_in_model_order():
    every = [f"model.layers.{i}.{p}" for i in range(2) for p in PROJECTIONS]
    assert target_module_names(LoraConfig(), CONFIG) == every
    assert target_module_names(LoraConfig(target_modules="v_proj,q_proj"), CONFIG) == [
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj"]
    assert target_module_names(LoraConfig(target_modules=["layers.1.mlp.down_proj"]), CONFIG) == [
        "model.layers.1.mlp.down_proj"]
    with pytest.raises(InputError, match="'model.layers.2.mlp.up_proj' matches no module of this model"):
        target_module_names(LoraConfig(target_modules=["model.layers.2.mlp.up_proj"]), CONFIG)


# ---- attaching, the forward, gradients -------------------------------------------------------------------------

def test_init_is_peft_s(model):
    base = logits(model)
    adapters = attach_lora(model, LoraConfig(r=4, lora_alpha=8), seed=7)
    assert model.adapters is adapters and len(adapters.module_names) == 14
    state = adapters.state_dict()
    a = state[lora_key("model.layers.0.mlp.down_proj", "A")]
    b = state[lora_key("model.layers.0.mlp.down_proj", "B")]
    assert a.shape == (4, 40) and b.shape == (24, 4) and a.dtype == b.dtype == np.float32
    bound = 1 / math.sqrt(40)  # kaiming_uniform(a=sqrt(5)) on (r, in)
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.8 * bound and np.all(b == 0)
    assert state[lora_key("model.layers.1.self_attn.k_proj", "B")].shape == (12, 4)
    again = LoraAdapters.from_arrays(adapters.config, adapters.arrays(), model.device).state_dict()
    assert all(np.array_equal(again[k], v) for k, v in state.items())
    assert all(t.requires_grad for t in adapters.parameters())
    np.testing.assert_array_equal(logits(model), base)  # B = 0: the base model exactly


def test_same_seed_same_init_other_seed_other(device):
    def first_a(seed):
        m = Model.from_numpy(CONFIG, base_state(), device)
        return attach_lora(m, LoraConfig(r=2), seed=seed).state_dict()[lora_key("model.layers.0.self_attn.q_proj",
                                                                                 "A")]
    assert np.array_equal(first_a(3), first_a(3)) and not np.array_equal(first_a(3), first_a(4))


def test_peft_names_and_parameter_order(model):
    adapters = attach_lora(model, LoraConfig(r=2, target_modules="q_proj,down_proj"))
    assert list(adapters.named_parameters()) == [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
        "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
        "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight",
        "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
        "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
        "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    assert model.trainable_parameters() == adapters.parameters()
    assert all(p is q for p, q in zip(adapters.parameters(), adapters.named_parameters().values()))


def test_adapt_against_numpy_and_finite_differences(device, rng):
    x = rng.standard_normal((2, 3, 9)).astype(np.float32)
    w = rng.standard_normal((5, 9)).astype(np.float32)
    a = rng.standard_normal((3, 9)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    config = LoraConfig(r=3, lora_alpha=4.5, lora_dropout=0.0)

    def fn(x, a, b):
        adapters = LoraAdapters(config, {"m": (a, b)})
        return adapters.adapt("m", x, ops.linear(x, Tensor.from_numpy(w, device)), training=True)

    with no_grad():
        out = fn(*(Tensor.from_numpy(v, device) for v in (x, a, b))).numpy()
    assert_close(out, x @ w.T + 1.5 * (x @ a.T) @ b.T)
    check_gradients(fn, [x, a, b], device)


def test_adapt_leaves_other_modules_and_disabled_adapters_alone(device, rng):
    y = Tensor.from_numpy(rng.standard_normal((2, 5)).astype(np.float32), device)
    x = Tensor.from_numpy(rng.standard_normal((2, 9)).astype(np.float32), device)
    a, b = (Tensor.from_numpy(rng.standard_normal(s).astype(np.float32), device) for s in ((3, 9), (5, 3)))
    adapters = LoraAdapters(LoraConfig(r=3), {"m": (a, b)})
    assert adapters.adapt("other", x, y) is y
    with adapters.disabled():
        assert adapters.adapt("m", x, y) is y and not adapters.enabled
    assert adapters.enabled and adapters.adapt("m", x, y) is not y


def test_adapted_logits_equal_the_merged_model_and_disabling_gives_the_base(model):
    base = logits(model)
    randomize(attach_lora(model, LoraConfig(r=3, lora_alpha=5, target_modules="all-linear")))
    adapted = logits(model)
    assert np.abs(adapted - base).max() > 0.1  # the adapters matter
    merged = Model.from_numpy(CONFIG, merged_state_dict(model), model.device)
    assert_close(logits(merged), adapted, scale=10)
    unloaded = merge_and_unload(model)
    assert unloaded.adapters is None and unloaded is not model
    np.testing.assert_array_equal(logits(unloaded), logits(merged))
    with model.disable_adapters():
        np.testing.assert_array_equal(logits(model), base)
    assert_close(logits(model), adapted)  # back on after the block


def test_gradients_reach_only_the_adapters_and_equal_with_checkpointing(model):
    randomize(attach_lora(model, LoraConfig(r=2, lora_dropout=0.0)))
    targets = Tensor.from_numpy(np.random.default_rng(4).integers(0, 61, IDS.shape).astype(np.int32), model.device)

    def grads():
        for p in model.trainable_parameters():
            p.grad = None
        ops.cross_entropy(model(IDS), targets).backward()
        return [p.grad.numpy() for p in model.trainable_parameters()]

    plain = grads()
    assert all(p.grad is None for p in model.parameters())  # the base stays frozen
    model.gradient_checkpointing_enable()
    for got, expected in zip(grads(), plain, strict=True):
        assert_close(got, expected, scale=10)


def test_dropout_is_off_in_eval_and_without_dropout(model):
    adapters = attach_lora(model, LoraConfig(r=2, lora_dropout=0.0))
    randomize(adapters)
    evaluated = logits(model)
    model.train()
    np.testing.assert_array_equal(logits(model), evaluated)  # p = 0: training changes nothing
    model.eval()
    adapters.config.lora_dropout = 0.5  # set after the check: eval mode never drops
    np.testing.assert_array_equal(logits(model), evaluated)


def test_dropout_while_training_is_seeded_and_recomputes_the_same(model, rng):
    from wgrpo.engine.ops import dropout
    adapters = attach_lora(model, LoraConfig(r=2, lora_dropout=0.3))
    randomize(adapters)
    evaluated = logits(model)
    model.train()
    adapters.dropout_seed = 11
    first = logits(model)
    assert np.abs(first - evaluated).max() > 1e-3 and np.array_equal(logits(model), first)
    adapters.dropout_seed = 12
    assert not np.array_equal(logits(model), first)
    # adapt drops the adapter's input with the module's own seed, and leaves the base path alone
    name = adapters.module_names[0]
    x = Tensor.from_numpy(rng.standard_normal((3, 24)).astype(np.float32), model.device)
    y = Tensor.from_numpy(rng.standard_normal((3, 24)).astype(np.float32), model.device)
    a, b = (t.numpy() for t in adapters.weights(name))
    with no_grad():
        dropped = dropout(x, 0.3, adapters.module_seed(name)).numpy()
        got = adapters.adapt(name, x, y, training=True).numpy()
    assert_close(got, y.numpy() + adapters.scaling * (dropped @ a.T) @ b.T)
    # a checkpointed layer, run again in the backward, draws the masks it drew the first time
    targets = Tensor.from_numpy(IDS.astype(np.int32), model.device)
    ops.cross_entropy(model(IDS), targets).backward()
    plain = [p.grad.numpy() for p in model.trainable_parameters()]
    for p in model.trainable_parameters():
        p.grad = None
    model.gradient_checkpointing_enable()
    ops.cross_entropy(model(IDS), targets).backward()
    for p, expected in zip(model.trainable_parameters(), plain, strict=True):
        assert_close(p.grad.numpy(), expected, scale=10)


def test_module_seeds_differ_per_module_and_per_dropout_seed(model):
    adapters = attach_lora(model, LoraConfig(r=2))
    seeds = {(s, m): None for s in range(3) for m in adapters.module_names}
    for s, m in seeds:
        adapters.dropout_seed = s
        seeds[s, m] = adapters.module_seed(m)
    assert len(set(seeds.values())) == len(seeds)
    adapters.dropout_seed = 1
    assert adapters.module_seed("model.layers.1.mlp.up_proj") == seeds[1, "model.layers.1.mlp.up_proj"]


def test_bfloat16_base_with_float32_adapters(device):
    model = Model.from_numpy(CONFIG, base_state(), device, dtype="bfloat16")
    adapters = attach_lora(model, LoraConfig(r=2, target_modules="q_proj,up_proj"))
    randomize(adapters)
    assert model.dtype == BFLOAT16 and all(p.dtype == np.float32 for p in adapters.parameters())
    # the reference: the bf16 weights widened exactly to float32, with the same adapters
    reference = Model.from_numpy(CONFIG, {k: widen(v) for k, v in model.state_dict().items()}, device)
    load_adapter_arrays(reference, adapters)
    assert_close(logits(model), logits(reference), scale=10)
    merged = merged_state_dict(model)
    assert merged["model.layers.0.self_attn.q_proj.weight"].dtype == BFLOAT16
    ops.cross_entropy(model(IDS), Tensor.from_numpy(IDS.astype(np.int32), device)).backward()
    assert all(p.grad is not None for p in adapters.parameters())


def load_adapter_arrays(model, adapters):
    model.adapters = LoraAdapters.from_arrays(adapters.config, adapters.arrays(), model.device)


def test_split_adapters_under_a_small_binding_limit(device, monkeypatch, rng):
    monkeypatch.setattr(device, "_binding_bytes", 1024)  # B (70, 8) and A (8, 40) are held in row blocks
    x = rng.standard_normal((3, 40)).astype(np.float32)
    w = rng.standard_normal((70, 40)).astype(np.float32)
    a = rng.standard_normal((8, 40)).astype(np.float32)
    b = rng.standard_normal((70, 8)).astype(np.float32)
    adapters = LoraAdapters.from_arrays(LoraConfig(r=8, lora_alpha=4), {"m": (a, b)}, device)
    assert all(t.is_split for t in adapters.parameters())
    xt = Tensor.from_numpy(x, device)
    out = adapters.adapt("m", xt, ops.linear(xt, Tensor.from_numpy(w, device)))
    assert_close(out.numpy(), x @ w.T + 0.5 * (x @ a.T) @ b.T, scale=10)
    out.backward(Tensor.from_numpy(np.ones(out.shape, np.float32), device))
    assert_close(adapters.parameters()[1].grad.numpy(), 0.5 * np.ones((3, 70)).T @ (x @ a.T), scale=10)
    new_b = rng.standard_normal((70, 8)).astype(np.float32)
    adapters.load_state_dict({lora_key("m", "A"): a, lora_key("m", "B"): new_b})
    np.testing.assert_array_equal(adapters.parameters()[1].numpy(), new_b)


def test_load_state_dict_is_in_place_and_checks_shapes(model):
    adapters = attach_lora(model, LoraConfig(r=2, target_modules="v_proj"))
    tensors = adapters.parameters()
    state = {k: np.full(t.shape, 0.5, np.float32) for k, t in adapters.named_parameters().items()}
    adapters.load_state_dict(state)
    assert adapters.parameters() == tensors and np.all(tensors[0].numpy() == 0.5)
    key = next(iter(state))
    with pytest.raises(InputError, match=f"tensor '{key}' has shape \\(3, 24\\), expected \\(2, 24\\)"):
        adapters.load_state_dict({**state, key: np.zeros((3, 24), np.float32)})
    with pytest.raises(InputError, match="missing"):
        adapters.load_state_dict({k: v for k, v in state.items() if k != key})
    with pytest.raises(InputError, match="unexpected"):
        adapters.load_state_dict({**state, "x.lora_A.weight": state[key]})


def test_attaching_twice_is_refused(model):
    attach_lora(model, LoraConfig(r=2))
    with pytest.raises(ValueError, match="already has adapters"):
        attach_lora(model, LoraConfig(r=2))


def test_merge_lora_weights_on_the_host(rng):
    w = rng.standard_normal((5, 4)).astype(np.float32)
    a, b = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((5, 2)).astype(np.float32)
    other = rng.standard_normal(3).astype(np.float32)
    merged = merge_lora_weights({"m.weight": w, "n": other}, {"m": (a, b)}, 0.75)
    np.testing.assert_allclose(merged["m.weight"], w + 0.75 * b @ a, rtol=1e-6)
    assert merged["n"] is other


# ---- PEFT's directory format -----------------------------------------------------------------------------------

@pytest.fixture
def saved(model, tmp_path):
    """A base checkpoint on disk, loaded, with random adapters saved beside it."""
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    base, _ = load_pretrained(base_dir, model.device)
    randomize(attach_lora(base, LoraConfig(r=3, lora_alpha=6, lora_dropout=0.1, target_modules="q_proj,mlp.up_proj")))
    adapter_dir = save_adapter(tmp_path / "adapter", base)
    return base, base_dir, adapter_dir


def test_the_adapter_directory_is_peft_s(saved):
    base, base_dir, adapter_dir = saved
    assert is_adapter_dir(adapter_dir) and not is_adapter_dir(base_dir)
    assert sorted(p.name for p in adapter_dir.iterdir()) == [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]
    config = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (3, 6, 0.1)
    assert config["target_modules"] == ["q_proj", "mlp.up_proj"]
    assert config["base_model_name_or_path"] == str(base_dir.absolute())
    assert (config["bias"], config["fan_in_fan_out"], config["use_rslora"], config["use_dora"]) == (
        "none", False, False, False)
    assert config["modules_to_save"] is None and config["inference_mode"] is True
    tensors = read_safetensors(adapter_dir / ADAPTER_WEIGHTS_FILE, keep_dtype=True)
    state = base.adapters.state_dict()
    assert sorted(tensors) == sorted(state) and all(np.array_equal(tensors[k], v) for k, v in state.items())
    assert all(v.dtype == np.float32 for v in tensors.values())


def test_all_linear_is_written_as_the_projection_names(model, tmp_path):
    attach_lora(model, LoraConfig(r=2))
    config = json.loads((save_adapter(tmp_path / "a", model, base_model_name_or_path="org/base")
                         / ADAPTER_CONFIG_FILE).read_text())
    assert config["target_modules"] == sorted(p.rsplit(".", 1)[1] for p in PROJECTIONS)
    assert config["base_model_name_or_path"] == "org/base"


def test_save_and_load_give_the_same_logits(saved, device):
    base, base_dir, adapter_dir = saved
    expected = logits(base)
    fresh, _ = load_pretrained(base_dir, device)
    adapters = load_adapter(fresh, adapter_dir)
    assert fresh.adapters is adapters and adapters.config.target_modules == ("q_proj", "mlp.up_proj")
    assert adapters.config.lora_dropout == 0.1 and adapters.scaling == 2.0
    assert_close(logits(fresh), expected)
    for loaded in (load_peft_model(adapter_dir, device)[0], load_pretrained(adapter_dir, device)[0],
                   load_peft_model(adapter_dir, device, base=str(base_dir))[0]):
        assert loaded.adapters is not None and loaded.name_or_path == str(base_dir.absolute())
        assert_close(logits(loaded), expected)


def test_load_peft_model_in_bfloat16_and_the_adapter_s_tokenizer(tmp_path, device):
    from wgrpo.engine.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["one two three four"] * 10, vocab_size=270)
    config = ModelConfig(**{**CONFIG.__dict__, "vocab_size": tokenizer.get_vocab_size()})
    base = Model.random(config, seed=2, device=device)
    base.save_pretrained(tmp_path / "base")
    base, base_tokenizer = load_pretrained(tmp_path / "base", device)
    assert base_tokenizer is None
    attach_lora(base, LoraConfig(r=2))
    save_adapter(tmp_path / "adapter", base, tokenizer=tokenizer, extra_files={"trainer_state/state.json": {"a": 1}})
    assert json.loads((tmp_path / "adapter" / "trainer_state" / "state.json").read_text()) == {"a": 1}
    loaded, loaded_tokenizer = load_peft_model(tmp_path / "adapter", device, dtype="bfloat16")
    assert loaded.dtype == BFLOAT16 and loaded_tokenizer.encode("one two").ids == tokenizer.encode("one two").ids


def test_keys_with_the_default_adapter_name_are_read(saved, tmp_path):
    base, base_dir, adapter_dir = saved
    tensors = read_safetensors(adapter_dir / ADAPTER_WEIGHTS_FILE)
    write_safetensors(adapter_dir / ADAPTER_WEIGHTS_FILE,
                      {k.replace(".weight", ".default.weight"): v for k, v in tensors.items()})
    _, arrays = read_adapter(adapter_dir, CONFIG)
    a, b = arrays["model.layers.1.mlp.up_proj"]
    np.testing.assert_array_equal(a, tensors[lora_key("model.layers.1.mlp.up_proj", "A")])
    np.testing.assert_array_equal(b, tensors[lora_key("model.layers.1.mlp.up_proj", "B")])


def edit_config(adapter_dir, **changes):
    path = adapter_dir / ADAPTER_CONFIG_FILE
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            config.pop(key)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("changes,message", [
    (dict(peft_type="IA3"), "peft_type 'IA3' is not supported; only LORA"),
    (dict(task_type="SEQ_CLS"), "task_type 'SEQ_CLS' is not supported"),
    (dict(bias="lora_only"), "field 'bias' = \"lora_only\" is not supported"),
    (dict(use_dora=True), "field 'use_dora' = true is not supported"),
    (dict(fan_in_fan_out=True), "field 'fan_in_fan_out' = true"),
    (dict(modules_to_save=["lm_head"]), "field 'modules_to_save' = \\[\"lm_head\"\\]"),
    (dict(rank_pattern={"q_proj": 8}), "field 'rank_pattern'"),
    (dict(alpha_pattern={"q_proj": 8}), "field 'alpha_pattern'"),
    (dict(layers_to_transform=[0]), "field 'layers_to_transform' = \\[0\\]"),
    (dict(init_lora_weights="pissa"), "'init_lora_weights' = 'pissa' is not supported: that initialization changes"),
    (dict(init_lora_weights="mica"), "'init_lora_weights' = 'mica' is not supported: MiCA"),
    (dict(target_modules=["q_proj", "lm_head"]), "target_modules: unknown module 'lm_head'"),
    (dict(target_modules=KeyError), "field 'target_modules' is missing"),
    (dict(target_modules="(lm_head|embed)"), "matches no linear layer of this model"),
    (dict(r=0), "r must be an integer >= 1"),
    (dict(r=4), "tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape \\(3, 24\\), "
                "expected \\(4, 24\\)"),
    (dict(target_modules=["q_proj", "up_proj", "v_proj"]), "no tensor 'base_model.model.model.layers.0.self_attn"
                                                          ".v_proj.lora_A.weight'"),
    (dict(target_modules=["q_proj"]), "unexpected tensor 'base_model.model.model.layers.0.mlp.up_proj.lora_A"),
])
def test_what_we_do_not_support_is_refused_naming_the_file_and_field(saved, changes, message):
    _, _, adapter_dir = saved
    edit_config(adapter_dir, **changes)
    with pytest.raises(InputError, match=message) as error:
        read_adapter(adapter_dir, CONFIG)
    assert "adapter_" in str(error.value)


def test_regex_target_modules_are_matched_as_peft_does(saved):
    _, _, adapter_dir = saved
    edit_config(adapter_dir, target_modules=r".*\.(q_proj|up_proj)")
    config, arrays = read_adapter(adapter_dir, CONFIG)
    assert list(arrays) == ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj",
                            "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj"]


def test_a_tensor_of_another_model_is_refused(saved, device):
    _, _, adapter_dir = saved
    other = Model.random(ModelConfig(**{**CONFIG.__dict__, "intermediate_size": 32}), device=device)
    with pytest.raises(InputError, match="up_proj.lora_B.weight' has shape \\(40, 3\\), expected \\(32, 3\\)"):
        load_adapter(other, adapter_dir)
    assert other.adapters is None


@pytest.mark.parametrize("base,message", [
    (None, "field 'base_model_name_or_path' is empty; pass the base model"),
    ("relative/dir/../x", "is a relative path, which depends on the working directory; pass the base model"),
    ("/no/such/base", "the base model /no/such/base does not exist here; pass the base model"),
])
def test_a_base_that_cannot_be_found_is_refused(saved, device, base, message):
    _, _, adapter_dir = saved
    edit_config(adapter_dir, base_model_name_or_path=base)
    with pytest.raises(InputError, match=message):
        load_peft_model(adapter_dir, device)


def test_save_adapter_refusals(model, tmp_path):
    with pytest.raises(ValueError, match="no adapters"):
        save_adapter(tmp_path / "a", model)
    attach_lora(model, LoraConfig(r=2))
    for name in (ADAPTER_CONFIG_FILE, "config.json", "../x", "/abs"):
        with pytest.raises(InputError, match="extra_files"):
            save_adapter(tmp_path / "a", model, extra_files={name: "x"})
    assert not (tmp_path / "a").exists()


def test_saving_over_an_adapter_replaces_it_whole(model, tmp_path):
    adapters = attach_lora(model, LoraConfig(r=2, target_modules="q_proj"))
    save_adapter(tmp_path / "a", model, extra_files={"trainer_state/state.json": {"step": 1}})  # a checkpoint's
    randomize(adapters)
    save_adapter(tmp_path / "a", model)
    assert not (tmp_path / "a" / "trainer_state").exists()
    _, arrays = read_adapter(tmp_path / "a", CONFIG)
    np.testing.assert_array_equal(arrays["model.layers.0.self_attn.q_proj"][1],
                                  adapters.weights("model.layers.0.self_attn.q_proj")[1].numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary directory left
