"""LoRA against transformers + peft: our adapters load in peft with the same logits, peft's load in ours with
the same logits and gradients, both ways round, on float32 and bfloat16 bases; and a merged checkpoint computes
what peft's unmerged model computes.

Needs the `oracle` extra (torch, transformers, peft); skips cleanly without it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from wgrpo.engine import (LoraConfig, Tensor, attach_lora, load_adapter, load_pretrained, no_grad, ops,  # noqa: E402
                          save_adapter)
from wgrpo.engine.peft_io import ADAPTER_CONFIG_FILE  # noqa: E402
from tests.engine.test_model_oracle import CASES, build_hf_model, relative_error  # noqa: E402

IDS = np.random.default_rng(1).integers(0, 50, size=(2, 9))


def randomize(adapters, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    adapters.load_state_dict({k: (0.2 * rng.standard_normal(t.shape)).astype(np.float32)
                              for k, t in adapters.named_parameters().items()})


def our_logits(model) -> np.ndarray:
    with no_grad():
        return model(IDS).numpy()


def peft_logits(peft_model) -> np.ndarray:
    with torch.no_grad():
        return peft_model(torch.from_numpy(IDS)).logits.float().numpy()


def hf_base(path, dtype=torch.float32):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


@pytest.mark.parametrize("case,config", [
    ("qwen2-gqa-tied", LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules="all-linear", use_rslora=True)),
    ("llama-untied", LoraConfig(r=3, lora_alpha=5, target_modules=["q_proj", "o_proj", "mlp.down_proj"])),
])
def test_our_adapter_loads_in_peft(device, tmp_path, case, config):
    build_hf_model(case, tmp_path / "base")
    model, _ = load_pretrained(tmp_path / "base", device)
    randomize(attach_lora(model, config))
    save_adapter(tmp_path / "adapter", model)

    # from the adapter directory alone: its base_model_name_or_path is the base's absolute path
    loaded = peft.AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()
    peft_config = loaded.peft_config["default"]
    assert (peft_config.r, peft_config.lora_alpha, peft_config.use_rslora) == (config.r, config.lora_alpha,
                                                                               config.use_rslora)
    assert relative_error(our_logits(model), peft_logits(loaded)) < 1e-4
    with loaded.disable_adapter(), model.disable_adapters():
        assert relative_error(our_logits(model), peft_logits(loaded)) < 1e-4


def test_peft_adapter_loads_in_ours_and_goes_back(device, tmp_path):
    hf_model = build_hf_model("qwen2-mqa", tmp_path / "base")
    peft_model = peft.get_peft_model(hf_model, peft.LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0,
                                                               init_lora_weights=False,
                                                               target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "peft")
    model, _ = load_pretrained(tmp_path / "base", device)
    adapters = load_adapter(model, tmp_path / "peft")
    assert len(adapters.module_names) == 2 and adapters.scaling == 4.0
    assert relative_error(our_logits(model), peft_logits(peft_model)) < 1e-4

    # gradients of the adapters: the same loss on both sides
    targets = np.random.default_rng(2).integers(0, 50, size=IDS.shape)
    ops.cross_entropy(model(IDS), Tensor.from_numpy(targets.astype(np.int32), device)).backward()
    logits = peft_model(torch.from_numpy(IDS)).logits
    torch.nn.functional.cross_entropy(logits.reshape(-1, 50), torch.from_numpy(targets).reshape(-1)).backward()
    theirs = {name.replace(".default", ""): p.grad.numpy() for name, p in peft_model.named_parameters()
              if p.requires_grad}
    assert sorted(theirs) == sorted(adapters.named_parameters())
    for name, tensor in adapters.named_parameters().items():
        assert relative_error(tensor.grad.numpy(), theirs[name]) < 1e-3, name

    # and back: ours saved, read by peft and by us
    save_adapter(tmp_path / "ours", model, base_model_name_or_path=str(tmp_path / "base"))
    again = peft.PeftModel.from_pretrained(hf_base(tmp_path / "base"), tmp_path / "ours").eval()
    assert relative_error(peft_logits(again), peft_logits(peft_model)) < 1e-5
    fresh, _ = load_pretrained(tmp_path / "ours", device)
    assert relative_error(our_logits(fresh), our_logits(model)) < 1e-6


def test_peft_all_linear_adapter_with_its_expanded_names(device, tmp_path):
    hf_model = build_hf_model("llama-untied", tmp_path / "base")
    peft_model = peft.get_peft_model(hf_model, peft.LoraConfig(r=2, lora_alpha=3, init_lora_weights=False,
                                                               target_modules="all-linear", use_rslora=True))
    peft_model.save_pretrained(tmp_path / "peft")
    written = json.loads((tmp_path / "peft" / ADAPTER_CONFIG_FILE).read_text())["target_modules"]
    assert "model.layers.0.self_attn.q_proj" in written  # what peft writes for "all-linear"
    model, _ = load_pretrained(tmp_path / "base", device)
    assert len(load_adapter(model, tmp_path / "peft").module_names) == 7 * CASES["llama-untied"]["num_hidden_layers"]
    assert relative_error(our_logits(model), peft_logits(peft_model.eval())) < 1e-4


def test_bfloat16_base(device, tmp_path):
    hf_model = build_hf_model("qwen2-gqa-tied", tmp_path / "f32")
    hf_model.to(torch.bfloat16).save_pretrained(tmp_path / "base")
    model, _ = load_pretrained(tmp_path / "base", device)
    assert str(model.dtype) != "float32"
    randomize(attach_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules="q_proj,k_proj,up_proj")))
    save_adapter(tmp_path / "adapter", model)
    # the bf16 weights widened exactly to f32, as our kernels read them, with peft's f32 adapters on top
    loaded = peft.PeftModel.from_pretrained(hf_base(tmp_path / "base"), tmp_path / "adapter").eval()
    assert relative_error(our_logits(model), peft_logits(loaded)) < 1e-4
    # the same adapter back into ours, from peft's own save
    loaded.save_pretrained(tmp_path / "peft")
    fresh, _ = load_pretrained(tmp_path / "base", device)
    load_adapter(fresh, tmp_path / "peft")
    assert relative_error(our_logits(fresh), our_logits(model)) < 1e-6


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-4), ("bfloat16", 3e-2)])
def test_merged_checkpoint_loads_in_transformers(device, tmp_path, dtype, tolerance):
    from wgrpo.tools.merge_cli import merge_adapter

    hf_model = build_hf_model("llama-untied", tmp_path / "f32")
    hf_model.to(getattr(torch, dtype)).save_pretrained(tmp_path / "base")
    model, _ = load_pretrained(tmp_path / "base", device)
    randomize(attach_lora(model, LoraConfig(r=4, lora_alpha=8)))
    save_adapter(tmp_path / "adapter", model)
    merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert merged.dtype == getattr(torch, dtype)
    unmerged = peft.PeftModel.from_pretrained(hf_base(tmp_path / "base"), tmp_path / "adapter").eval()
    assert relative_error(peft_logits(merged), peft_logits(unmerged)) < tolerance
