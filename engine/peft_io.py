"""PEFT's adapter directory: `adapter_config.json` + `adapter_model.safetensors` (+ tokenizer files), read and
written as PEFT 0.21 reads and writes them, so an adapter moves between this engine and transformers + peft.

Owns: the adapter_config.json fields (what we write, what we refuse on reading, naming the file and field), the
tensor names (PEFT's `base_model.model.<module>.lora_A.weight`, read with or without the `.default` adapter
name), what an adapter directory holds (written atomically by `engine.hf.write_directory`), and finding an
adapter's base model. The adapters themselves are `engine.lora`'s. Must not import `rl`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.errors import InputError
from wgrpo.engine.hf import ExtraFile, FileContent, write_directory
from wgrpo.engine.hf_tokenizer import TOKENIZER_FILE, check_tokenizer_type, load_tokenizer, write_tokenizer_files
from wgrpo.engine.json_file import read_json
from wgrpo.engine.lora import (ALL_LINEAR, PEFT_PREFIX, PROJECTION_NAMES, LoraConfig, linear_modules, lora_key,
                               module_shapes, target_module_names)
from wgrpo.engine.model import ADAPTER_CONFIG_FILE
from wgrpo.engine.safetensors_io import read_safetensors, write_safetensors

ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# names an adapter directory may not take from extra_files: its own files, and a model's (a directory holding
# config.json as well would read as a full checkpoint)
_RESERVED = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, "config.json", "model.safetensors",
             "model.safetensors.index.json")

# fields of adapter_config.json that select PEFT features this engine lacks, with the values that mean "off"
_OFF_VALUES: dict[str, tuple] = {
    "bias": ("none",),
    "use_dora": (False, None),
    "fan_in_fan_out": (False, None),
    "modules_to_save": (None, []),
    "rank_pattern": (None, {}),
    "alpha_pattern": (None, {}),
    "layers_to_transform": (None,),
    "layer_replication": (None,),
    "exclude_modules": (None, [], ""),
    "lora_bias": (False, None),
    "use_qalora": (False, None),
    "target_parameters": (None, []),
    "trainable_token_indices": (None,),
    "alora_invocation_tokens": (None,),
    "use_bdlora": (None, False),
    "arrow_config": (None,),
    "kasa_config": (None,),
    "velora_config": (None,),
    "monteclora_config": (None,),
    "megatron_config": (None,),
    "lora_ga_config": (None,),
}
# init_lora_weights values (prefixes) whose adapters this engine cannot use as they are, and why
_UNSUPPORTED_INITS = {
    init: "that initialization changes the base weights, so the adapter does not fit the base model (PEFT converts "
          "it to a plain LoRA with path_initial_model_for_weight_conversion)"
    for init in ("pissa", "olora", "corda", "loftq")}
_UNSUPPORTED_INITS["mica"] = "MiCA is a LoRA variant with a frozen B, which this engine does not have"


# ---- writing ---------------------------------------------------------------------------------------------------

def adapter_config_dict(config: LoraConfig, base_model_name_or_path: str | None = None,
                        revision: str | None = None) -> dict[str, Any]:
    """adapter_config.json as PEFT writes it for a causal LM, with the fields every PEFT since 0.10 reads (later
    ones take their defaults, and older versions load it without warnings). "all-linear" is written as the
    seven projection names, which every PEFT version and LoRA server matches."""
    targets = sorted(PROJECTION_NAMES) if config.target_modules == ALL_LINEAR else list(config.target_modules)
    return {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base_model_name_or_path or None,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
        "lora_alpha": _plain_number(config.lora_alpha), "lora_dropout": config.lora_dropout, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA", "r": config.r,
        "rank_pattern": {}, "revision": revision, "target_modules": targets, "task_type": "CAUSAL_LM",
        "use_dora": False, "use_rslora": config.use_rslora,
    }


def _plain_number(value):
    """An integral float as an int (alpha 32, not 32.0, as PEFT users write it)."""
    return int(value) if float(value).is_integer() else float(value)


def save_adapter(directory: str | os.PathLike, model, tokenizer=None, base_model_name_or_path: str = "",
                 extra_files: Mapping[str, ExtraFile] | None = None) -> Path:
    """Write the model's adapters as a PEFT adapter directory, atomically, and return its path.

    adapter_config.json (its base_model_name_or_path: the one given, else the model's `name_or_path`, the
    directory or Hub id it was loaded from), adapter_model.safetensors (float32), the tokenizer files when a
    tokenizer is given, and `extra_files` as `engine.hf.write_checkpoint` takes them (e.g. "trainer_state/..."),
    written last. A killed or failed write leaves `directory` as it was (`engine.hf.write_directory`)."""
    if model.adapters is None:
        raise ValueError("save_adapter: the model has no adapters (attach_lora or load_adapter first)")
    check_tokenizer_type(tokenizer, "save_adapter")
    extra_files = dict(extra_files or {})
    for name in extra_files:
        _check_extra_name(name)
    base = base_model_name_or_path or getattr(model, "name_or_path", "") or None
    adapter_config = adapter_config_dict(model.adapters.config, base)
    files: list[tuple[str, FileContent]] = [
        (ADAPTER_CONFIG_FILE, json.dumps(adapter_config, indent=2, sort_keys=True) + "\n"),  # PEFT sorts its keys
        # read back from the device only once the directory's name and contents have been checked
        (ADAPTER_WEIGHTS_FILE, lambda path: write_safetensors(path, model.adapters.state_dict()))]
    if tokenizer is not None:
        files.append((TOKENIZER_FILE, lambda path: write_tokenizer_files(tokenizer, model.config, path.parent)))
    return write_directory(directory, files + list(extra_files.items()), what="adapter", checkpoint=True)


def _check_extra_name(name) -> None:
    if not isinstance(name, str) or not Path(name).parts or Path(name).is_absolute() or ".." in Path(name).parts:
        raise InputError(f"save_adapter: extra_files name {name!r} must be a relative path inside the adapter "
                         f"directory")
    if name in _RESERVED:
        raise InputError(f"save_adapter: extra_files may not write {name!r} into an adapter directory")


# ---- reading ---------------------------------------------------------------------------------------------------

def is_adapter_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding PEFT's adapter_config.json."""
    return (Path(path) / ADAPTER_CONFIG_FILE).is_file()


def read_adapter_json(directory: str | os.PathLike) -> dict[str, Any]:
    """The adapter_config.json of `directory`, refused (InputError naming the file and field) when it is not a
    LoRA adapter of a causal LM or uses a PEFT feature this engine lacks."""
    path = Path(directory) / ADAPTER_CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{directory}: no {ADAPTER_CONFIG_FILE}: not a PEFT adapter directory")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("peft_type") != "LORA":
        raise InputError(f"{path}: peft_type {raw.get('peft_type')!r} is not supported; only LORA adapters are")
    if raw.get("task_type") not in (None, "CAUSAL_LM"):
        raise InputError(f"{path}: task_type {raw['task_type']!r} is not supported; only CAUSAL_LM (or null)")
    for field, off in _OFF_VALUES.items():
        value = raw.get(field, off[0])
        if not any(value == o and type(value) is type(o) for o in off):
            raise InputError(f"{path}: field {field!r} = {json.dumps(value)} is not supported (expected "
                             f"{' or '.join(json.dumps(o) for o in off)})")
    init = raw.get("init_lora_weights", True)
    for prefix, why in _UNSUPPORTED_INITS.items():
        if isinstance(init, str) and init.lower().startswith(prefix):
            raise InputError(f"{path}: field 'init_lora_weights' = {init!r} is not supported: {why}")
    if raw.get("target_modules") is None:
        raise InputError(f"{path}: field 'target_modules' is missing or null; expected the adapted module names")
    return raw


def adapter_lora_config(raw: Mapping[str, Any], model_config: ModelConfig, source: str) -> LoraConfig:
    """The LoraConfig of a checked adapter_config.json for a model of `model_config`. A target_modules string
    other than "all-linear" is, as in PEFT, a regular expression over full module names."""
    targets = raw["target_modules"]
    if isinstance(targets, str) and targets != ALL_LINEAR:
        try:
            pattern = re.compile(targets)
        except re.error as error:
            raise InputError(f"{source}: field 'target_modules' = {targets!r} is not a valid regular expression "
                             f"({error})") from None
        targets = [m for m in linear_modules(model_config) if pattern.fullmatch(m)]
        if not targets:
            raise InputError(f"{source}: field 'target_modules' = {raw['target_modules']!r} matches no linear "
                             f"layer of this model (names such as model.layers.0.self_attn.q_proj)")
    fields = {"r": raw.get("r", 8), "lora_alpha": raw.get("lora_alpha", 8),  # PEFT's defaults
              "lora_dropout": raw.get("lora_dropout", 0.0), "target_modules": targets,
              "use_rslora": raw.get("use_rslora", False)}
    try:
        config = LoraConfig(**fields)
        target_module_names(config, model_config)
    except InputError as error:
        raise InputError(f"{source}: {str(error).removeprefix('LoraConfig: ')}") from None
    return config


def read_adapter(directory: str | os.PathLike, model_config: ModelConfig
                 ) -> tuple[LoraConfig, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(LoraConfig, module -> (A, B) float32 arrays) of a PEFT adapter directory, checked against the model of
    `model_config`: exactly the tensors its target modules need, each of the shape the model's weights give."""
    directory = Path(directory)
    source = directory / ADAPTER_CONFIG_FILE
    config = adapter_lora_config(read_adapter_json(directory), model_config, str(source))
    path = directory / ADAPTER_WEIGHTS_FILE
    if not path.is_file():
        hint = " (found adapter_model.bin: pickled weights are not read; save with safetensors)" \
            if (directory / "adapter_model.bin").exists() else ""
        raise InputError(f"{directory}: no {ADAPTER_WEIGHTS_FILE}{hint}")
    tensors = {_without_adapter_name(k): v for k, v in read_safetensors(path, require_finite=True).items()}
    shapes = module_shapes(model_config, target_module_names(config, model_config))
    arrays = {}
    for module, (out_features, in_features) in shapes.items():
        pair = []
        for matrix, shape in (("A", (config.r, in_features)), ("B", (out_features, config.r))):
            key = lora_key(module, matrix)
            if key not in tensors:
                raise InputError(f"{path}: no tensor {key!r} (target_modules of {source.name} include {module})")
            if tensors[key].shape != shape:
                raise InputError(f"{path}: tensor {key!r} has shape {tensors[key].shape}, expected {shape} (r="
                                 f"{config.r}, and the model's {module} is ({out_features}, {in_features}))")
            pair.append(np.asarray(tensors.pop(key), np.float32))
        arrays[module] = tuple(pair)
    if tensors:
        names = sorted(tensors)
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        raise InputError(f"{path}: unexpected tensor {names[0]!r}{more}: this engine adapts only the linear layers "
                         f"of the decoder layers ({PEFT_PREFIX}model.layers.N.<module>.lora_A/lora_B.weight) that "
                         f"{source.name}'s target_modules name")
    return config, arrays


_ADAPTER_NAME = re.compile(r"\.(lora_[AB])\.[^.]+\.weight$")


def _without_adapter_name(key: str) -> str:
    """`...lora_A.default.weight` (in memory, PEFT names the adapter) as saved: `...lora_A.weight`."""
    return _ADAPTER_NAME.sub(r".\1.weight", key)


def load_adapter(model, directory: str | os.PathLike):
    """Attach the PEFT adapter in `directory` to `model` (sets and returns `model.adapters`)."""
    from wgrpo.engine.lora import LoraAdapters

    if model.adapters is not None:
        raise ValueError("load_adapter: the model already has adapters; set model.adapters = None first")
    config, arrays = read_adapter(directory, model.config)
    model.adapters = LoraAdapters.from_arrays(config, arrays, model.device)
    return model.adapters


# ---- the base model --------------------------------------------------------------------------------------------

def resolve_base(directory: str | os.PathLike, base: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(the base model's checkpoint directory, its name as the adapter records it) of the adapter in
    `directory`: `base` when given, else adapter_config.json's base_model_name_or_path (an absolute directory
    or a Hub id, at its `revision`)."""
    from wgrpo.engine.hub import is_hub_id, resolve_model_path

    directory = Path(directory)
    raw = read_adapter_json(directory)
    source = directory / ADAPTER_CONFIG_FILE
    if base is not None and os.fspath(base):
        path = resolve_model_path(base)
        name = os.fspath(base) if is_hub_id(os.fspath(base)) else str(path.absolute())
    else:
        name = raw.get("base_model_name_or_path")
        advice = "pass the base model (base=..., or --base on the command line)"
        if not isinstance(name, str) or not name:
            raise InputError(f"{source}: field 'base_model_name_or_path' is empty; {advice}")
        if Path(name).is_absolute():
            if not Path(name).is_dir():
                raise InputError(f"{source}: the base model {name} does not exist here; {advice}")
            path = Path(name)
        elif is_hub_id(name):
            revision = raw.get("revision")
            path = resolve_model_path(name, revision=revision if isinstance(revision, str) and revision else None)
        else:
            raise InputError(f"{source}: base_model_name_or_path {name!r} is a relative path, which depends on the "
                             f"working directory; {advice}")
    if is_adapter_dir(path):
        raise InputError(f"{path}: the base model is itself an adapter directory; pass the full base checkpoint")
    return path, name


def load_peft_model(directory: str | os.PathLike, device=None, dtype: str = "auto", base=None):
    """(Model with the adapter attached, tokenizer or None) of a PEFT adapter directory, as peft's
    AutoPeftModelForCausalLM: the base from `base` or the adapter's base_model_name_or_path (`resolve_base`),
    held in `dtype` as `load_pretrained` holds it; the tokenizer the adapter directory's when it has one, else
    the base's. Everything is checked before the base weights are read."""
    from wgrpo.engine.dtypes import float_dtype
    from wgrpo.engine.hf import read_config
    from wgrpo.engine.lora import LoraAdapters
    from wgrpo.engine.model import load_pretrained

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such adapter directory")
    if dtype != "auto":
        float_dtype(dtype, "load_peft_model: dtype")
    path, name = resolve_base(directory, base)
    model_config = read_config(path)
    config, arrays = read_adapter(directory, model_config)
    tokenizer = load_tokenizer(directory, model_config) if (directory / TOKENIZER_FILE).is_file() else None
    model, base_tokenizer = load_pretrained(path, device, dtype)
    model.name_or_path = name
    model.adapters = LoraAdapters.from_arrays(config, arrays, model.device)
    return model, tokenizer if tokenizer is not None else base_tokenizer


__all__ = ["ADAPTER_CONFIG_FILE", "ADAPTER_WEIGHTS_FILE", "adapter_config_dict", "adapter_lora_config",
           "is_adapter_dir", "load_adapter", "load_peft_model", "read_adapter", "read_adapter_json", "resolve_base",
           "save_adapter"]
