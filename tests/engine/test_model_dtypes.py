"""Weights kept in their checkpoint's dtype: a bf16 or f16 checkpoint saved by transformers loads as bf16/f16 on
the device (about half the weight bytes of its f32 twin), gives transformers' float32 logits on the same weights
widened, decodes greedily like it, and `save_pretrained` writes the dtype it holds; `--dtype` converts on load;
the trainer's policy is float32 beside a reference in the loaded dtype. Also under a forced small binding limit,
so the embedding and the head are held in row blocks.

Needs the `oracle` extra (torch and transformers); skips cleanly without it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from wgrpo.engine import generate, load_pretrained  # noqa: E402
from wgrpo.engine.dtypes import BFLOAT16  # noqa: E402
from wgrpo.engine.safetensors_io import read_header  # noqa: E402
from tests.engine.test_architectures import build_hf_model  # noqa: E402
from tests.oracle import transformers_greedy  # noqa: E402

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
PROMPT = [[3, 17, 5, 40, 22, 9, 31, 2, 11, 28, 6, 14]]


def saved_in(dtype: str, case: str, directory):
    """`case` built by transformers, saved in `dtype`, and the same weights widened to float32 in transformers."""
    model = build_hf_model(case, directory)
    model.to(TORCH_DTYPES[dtype]).save_pretrained(directory, safe_serialization=True)
    return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("small_limit", [False, True])
@pytest.mark.parametrize("dtype, case", [("bfloat16", "qwen2-tied"), ("bfloat16", "llama3-rope-untied"),
                                         ("float16", "qwen3-tied")])
def test_a_16_bit_checkpoint_stays_16_bit_and_matches_transformers(device, tmp_path, monkeypatch, dtype, case,
                                                                   small_limit):
    reference = saved_in(dtype, case, tmp_path / "ckpt")
    if small_limit:  # the embedding and an untied head go to row blocks; the activations still fit
        monkeypatch.setattr(device, "_binding_bytes", 8192)
    model, _ = load_pretrained(tmp_path / "ckpt", device)
    embedding = model.params["model.embed_tokens.weight"]
    assert model.dtype == (BFLOAT16 if dtype == "bfloat16" else np.float16)
    assert embedding.dtype == model.dtype and embedding.is_split == small_limit
    assert model.params["model.norm.weight"].dtype == np.float32  # vectors are held in float32
    with torch.no_grad():
        theirs = reference(torch.tensor(PROMPT)).logits.numpy()
    assert relative_error(model(np.array(PROMPT)).numpy(), theirs) < 1e-4
    result = generate(model, [PROMPT[0]], max_new_tokens=8, temperature=0.0, eos_token_ids=())
    assert result.sequences[0].token_ids.tolist() == transformers_greedy(reference, PROMPT[0], 8)

    model.save_pretrained(tmp_path / "saved")
    header = read_header(tmp_path / "saved" / "model.safetensors")
    stored = {entry["dtype"] for name, entry in header.items() if not name.startswith("__")}
    assert stored == {"BF16" if dtype == "bfloat16" else "F16"}
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["torch_dtype"] == dtype
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.float32).eval()
    with torch.no_grad():
        assert np.array_equal(again(torch.tensor(PROMPT)).logits.numpy(), theirs)


def test_a_bf16_checkpoint_takes_half_the_weight_bytes(device, tmp_path):
    build_hf_model("qwen2-tied", tmp_path / "f32")
    saved_in("bfloat16", "qwen2-tied", tmp_path / "bf16")
    memory = device.runtime.memory
    weights = {}
    for name in ("f32", "bf16"):
        before = memory.current["weights"]
        model, _ = load_pretrained(tmp_path / name, device)
        weights[name] = memory.current["weights"] - before
        del model
    assert 0.45 < weights["bf16"] / weights["f32"] < 0.6


def test_dtype_converts_on_load_and_the_policy_trains_float32(device, tmp_path):
    from wgrpo.rl.train.config import TrainConfig
    from wgrpo.rl.train.pipeline import policy_and_reference

    build_hf_model("qwen2-tied", tmp_path / "f32")
    model, _ = load_pretrained(tmp_path / "f32", device, dtype="bfloat16")
    assert model.dtype == BFLOAT16
    with pytest.raises(TypeError, match=r"train a float32 copy: model\.to\('float32'\)"):
        model.requires_grad_()
    policy, reference = policy_and_reference(model, TrainConfig(beta=0.04))
    assert policy.dtype == np.float32 and reference is model
    policy.requires_grad_()
    same, copy = policy_and_reference(policy, TrainConfig(beta=0.04))
    assert same is policy and copy is not policy and copy.dtype == np.float32
    assert policy_and_reference(model, TrainConfig(beta=0.0))[1] is None
    with pytest.raises(ValueError, match="load_pretrained: dtype: expected one of"):
        load_pretrained(tmp_path / "f32", device, dtype="int8")
