"""`rl.train.trl_options` and `GRPOConfig.peft_lora_options`: the tables of options GRPOConfig accepts without
mapping them (re-exported by grpo_config), and PEFT's and wgrpo's LoraConfig as `to_train_config`'s `lora`,
with every PEFT field wgrpo's LoRA does not implement refused by name."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from wgrpo.engine import InputError
from wgrpo.engine import LoraConfig as WgrpoLoraConfig
from wgrpo.rl.train import grpo_config, trl_options
from wgrpo.rl.train.grpo_config import GRPOConfig, peft_lora_options
from wgrpo.rl.train.trl_options import PEFT_LORA_DEFAULTS, TRLOptions, unsupported_peft_fields

try:
    import peft
except ImportError:  # the `peft` extra
    peft = None
needs_peft = pytest.mark.skipif(peft is None, reason="PEFT is not installed")


def peft_lora(**fields):
    with warnings.catch_warnings():  # PEFT warns about some combinations; the config is what matters here
        warnings.simplefilter("ignore")
        return peft.LoraConfig(**fields)


def test_grpo_config_re_exports_the_tables():
    for name in ("NOT_APPLICABLE", "NO_EFFECT", "FORMER_NAMES"):
        assert getattr(grpo_config, name) is getattr(trl_options, name)
    assert issubclass(GRPOConfig, TRLOptions)
    assert all(f.kw_only for f in dataclasses.fields(TRLOptions))  # GRPOConfig's positional order stays TRL's


def test_an_unknown_option_names_the_class_it_was_given_to():
    with pytest.raises(InputError, match=r"^GRPOConfig: unknown option 'num_generation' \(did you mean "
                                         r"num_generations\?\)$"):
        GRPOConfig(num_generation=4)
    with pytest.raises(InputError, match="^GRPOConfig: option 'evaluation_strategy' of earlier transformers "
                                         "releases does not apply to wgrpo"):
        GRPOConfig(evaluation_strategy="steps")


# ---------------------------------------------------------------------------------------------- PEFT's LoraConfig


@needs_peft
def test_peft_defaults_become_peft_values():
    assert peft_lora_options(peft_lora()) == dict(r=8, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules="q_proj,v_proj", use_rslora=False)


@needs_peft
def test_peft_values_are_read_and_targets_sorted():
    config = peft_lora(r=4, lora_alpha=16, lora_dropout=0.1, target_modules=["v_proj", "q_proj", "o_proj"],
                       use_rslora=True)
    assert peft_lora_options(config) == dict(r=4, lora_alpha=16, lora_dropout=0.1,
                                             target_modules="o_proj,q_proj,v_proj", use_rslora=True)
    assert peft_lora_options(peft_lora(target_modules="all-linear"))["target_modules"] == "all-linear"


@needs_peft
def test_bookkeeping_fields_and_empty_containers_are_accepted():
    config = peft_lora(task_type="CAUSAL_LM", inference_mode=True, base_model_name_or_path="Qwen/Qwen2.5-0.5B",
                       revision="main", modules_to_save=[], layers_to_transform=[])
    assert peft_lora_options(config)["r"] == 8


@pytest.mark.parametrize("fields,named", [
    (dict(bias="all"), "bias='all'"),
    (dict(bias="lora_only"), "bias='lora_only'"),
    (dict(use_dora=True), "use_dora=True"),
    (dict(modules_to_save=["lm_head"]), "modules_to_save=['lm_head']"),
    (dict(init_lora_weights="gaussian"), "init_lora_weights='gaussian'"),
    (dict(init_lora_weights=False), "init_lora_weights=False"),
    (dict(rank_pattern={"q_proj": 4}), "rank_pattern={'q_proj': 4}"),
    (dict(alpha_pattern={"q_proj": 4}), "alpha_pattern={'q_proj': 4}"),
    (dict(exclude_modules=["o_proj"]), "exclude_modules="),
    (dict(layers_to_transform=[0]), "layers_to_transform=[0]"),
    (dict(lora_bias=True), "lora_bias=True"),
    (dict(target_parameters=["mlp.experts.gate_up_proj"]), "target_parameters=['mlp.experts.gate_up_proj']"),
    (dict(fan_in_fan_out=True), "fan_in_fan_out=True"),
    (dict(megatron_config={"tensor_model_parallel_size": 2}), "megatron_config="),
    (dict(use_qalora=True), "use_qalora=True"),
    (dict(trainable_token_indices=[1, 2]), "trainable_token_indices=[1, 2]"),
])
@needs_peft
def test_each_field_wgrpo_does_not_implement_is_refused_by_name(fields, named):
    with pytest.raises(InputError) as error:
        peft_lora_options(peft_lora(**fields))
    message = str(error.value)
    assert message.startswith(f"peft_config: {named}"), message
    assert "not supported; wgrpo's LoRA implements r, lora_alpha, lora_dropout, target_modules, use_rslora" in message
    assert "\n" not in message


@needs_peft
def test_a_loftq_config_is_refused():
    config = peft_lora()
    config.loftq_config = {"loftq_bits": 4}  # PEFT keeps it only with init_lora_weights="loftq" (needs scipy)
    with pytest.raises(InputError, match=r"^peft_config: loftq_config=\{'loftq_bits': 4\}: not supported.*"
                                         r"PEFT's defaults \(loftq_config=\{\}\)"):
        peft_lora_options(config)


@needs_peft
def test_every_refused_field_is_in_one_error_with_its_default():
    config = peft_lora(bias="all", use_dora=True, layers_to_transform=[0, 1], layers_pattern="layers")
    with pytest.raises(InputError) as error:
        peft_lora_options(config)
    assert str(error.value).startswith(
        "peft_config: bias='all', layers_to_transform=[0, 1], layers_pattern='layers', use_dora=True: not supported")
    assert str(error.value).endswith("(bias='none', layers_to_transform=None, layers_pattern=None, use_dora=False)")


@needs_peft
def test_a_field_of_a_later_peft_release_is_caught_by_the_types_own_default():
    @dataclasses.dataclass
    class LaterLoraConfig(peft.LoraConfig):
        future_adapter_trick: bool = False

    assert peft_lora_options(LaterLoraConfig(r=2))["r"] == 2
    with pytest.raises(InputError, match="^peft_config: future_adapter_trick=True: not supported"):
        peft_lora_options(LaterLoraConfig(future_adapter_trick=True))


@needs_peft
def test_a_type_that_needs_arguments_is_compared_with_peft_defaults():
    @dataclasses.dataclass
    class Needs:
        r: int
        lora_alpha: float
        bias: str = "none"
        something_unknown: int = 3

    assert peft_lora_options(Needs(4, 8, something_unknown=5))["target_modules"] == "q_proj,v_proj"
    with pytest.raises(InputError, match=r"^peft_config: bias='all': not supported"):
        peft_lora_options(Needs(4, 8, bias="all"))
    assert unsupported_peft_fields(Needs(4, 8, bias="all")) == {"bias": ("all", "none")}
    assert PEFT_LORA_DEFAULTS["bias"] == peft_lora().bias  # the known defaults are PEFT's


@needs_peft
def test_another_kind_of_peft_adapter_is_refused():
    with pytest.raises(InputError, match=r"^peft_config PromptTuningConfig \(PROMPT_TUNING\): wgrpo trains LoRA"):
        peft_lora_options(peft.PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"))


@needs_peft
def test_peft_values_train_the_lora_they_describe():
    lora = peft_lora_options(peft_lora(r=4, lora_alpha=16, target_modules={"q_proj", "k_proj"}))
    t = GRPOConfig(max_steps=2).to_train_config(model="m", use_peft=True, lora=lora)
    assert (t.use_peft, t.lora_r, t.lora_alpha, t.lora_dropout, t.lora_target_modules, t.use_rslora) == (
        True, 4, 16.0, 0.0, "k_proj,q_proj", False)
    assert t.lora_config().scaling == 4.0


# ---------------------------------------------------------------------------------------------- wgrpo's LoraConfig


def test_wgrpo_lora_config_becomes_its_values():
    assert peft_lora_options(WgrpoLoraConfig()) == dict(r=16, lora_alpha=32, lora_dropout=0.05,
                                                        target_modules="all-linear", use_rslora=False)
    config = WgrpoLoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["v_proj", "q_proj"],
                             use_rslora=True)
    assert peft_lora_options(config) == dict(r=2, lora_alpha=4, lora_dropout=0.0, target_modules="q_proj,v_proj",
                                             use_rslora=True)
    t = GRPOConfig(max_steps=2).to_train_config(use_peft=True, lora=peft_lora_options(config))
    assert (t.lora_r, t.lora_target_modules, t.use_rslora) == (2, "q_proj,v_proj", True)


def test_wgrpo_lora_config_with_another_bias_is_refused():
    config = WgrpoLoraConfig()
    config.bias = "all"  # its constructor refuses it; a config changed afterwards is caught here too
    with pytest.raises(InputError, match=r"^peft_config: bias='all': not supported"):
        peft_lora_options(config)
