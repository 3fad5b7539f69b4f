"""LoRA (low-rank adapters) on the model's linear layers, with PEFT's names and semantics.

Owns: `LoraConfig` (PEFT's fields and defaults that matter here, checked), which modules a config targets,
`LoraAdapters` (the A and B matrices of each targeted module, the forward delta
y + scaling * B(A(dropout(x))) that `Model._project` asks for, or added into its columns of a fused projection's
output, on/off switching, PEFT's tensor names) and
`attach_lora` (PEFT's initialization), and merging an adapter into the base weights (`merge_lora_weights` on
the host, `merged_state_dict` of a model). PEFT's directory format is `engine.peft_io`'s. Must not import `rl`.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from wgrpo.engine.config import ModelConfig
from wgrpo.engine.dtypes import FLOAT32, convert, widen
from wgrpo.engine.errors import InputError
from wgrpo.engine.hf_layout import expected_shapes

ALL_LINEAR = "all-linear"
# the linear layers of a decoder layer, in the order the forward runs them (PEFT's "all-linear" on these models:
# every linear but the output head)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
               "mlp.up_proj", "mlp.down_proj")
PROJECTION_NAMES = tuple(p.rsplit(".", 1)[1] for p in PROJECTIONS)
# the prefix of PeftModelForCausalLM's tensor names: PeftModel.base_model (LoraModel) .model (the ForCausalLM)
PEFT_PREFIX = "base_model.model."
# a target entry as PEFT matches it (the module's full name or a dotted suffix of it) for some layer index
_TARGET = re.compile(r"(?:(?:(?:model\.)?layers\.)?\d+\.)?(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)"
                     r"|(?:q|k|v|o|gate|up|down)_proj")


@dataclass
class LoraConfig:
    """PEFT's LoraConfig for these models: rank `r`, `lora_alpha`, `lora_dropout` on each adapter's input while
    training, `target_modules` ("all-linear": the seven linear layers of every decoder layer, never lm_head; or
    a list, or a comma-separated string, of module names or dotted suffixes such as "q_proj" or
    "model.layers.0.mlp.up_proj"), `use_rslora` (scaling alpha / sqrt(r) instead of alpha / r). Only
    bias="none" exists here. The defaults are common fine-tuning choices, not PEFT's own (r=8, alpha=8,
    dropout 0, which an adapter_config.json missing those fields gets)."""

    r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    target_modules: str | Sequence[str] = ALL_LINEAR
    use_rslora: bool = False
    bias: str = "none"

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, (int, np.integer)) or self.r < 1:
            raise InputError(f"LoraConfig: r must be an integer >= 1, got {self.r!r}")
        self.r = int(self.r)
        if not _is_number(self.lora_alpha) or not self.lora_alpha > 0:
            raise InputError(f"LoraConfig: lora_alpha must be a finite number > 0, got {self.lora_alpha!r}")
        if not _is_number(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            raise InputError(f"LoraConfig: lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not isinstance(self.use_rslora, bool):
            raise InputError(f"LoraConfig: use_rslora must be true or false, got {self.use_rslora!r}")
        if self.bias != "none":
            raise InputError(f"LoraConfig: bias {self.bias!r} is not supported; only 'none' (the base biases stay "
                             f"frozen and no LoRA bias is trained)")
        self.target_modules = _normalize_targets(self.target_modules)

    @property
    def scaling(self) -> float:
        """The factor of the low-rank update: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)


def _normalize_targets(targets) -> str | tuple[str, ...]:
    """"all-linear", or the distinct target names in the order given; unknown names refused."""
    if isinstance(targets, str):
        if targets == ALL_LINEAR:
            return ALL_LINEAR
        targets = targets.split(",")
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
        raise InputError(f"LoraConfig: target_modules must be 'all-linear', a list of module names or a "
                         f"comma-separated string, got {targets!r}")
    names = tuple(dict.fromkeys(t.strip() for t in targets if t.strip()))
    if not names:
        raise InputError(f"LoraConfig: target_modules is empty; expected 'all-linear' or some of "
                         f"{', '.join(PROJECTION_NAMES)}")
    for name in names:
        if name == ALL_LINEAR:
            raise InputError("LoraConfig: target_modules: 'all-linear' stands alone, not in a list")
        if not _TARGET.fullmatch(name):
            raise InputError(f"LoraConfig: target_modules: unknown module {name!r}; valid: "
                             f"{', '.join(PROJECTION_NAMES)} (or a dotted path ending in one, such as "
                             f"model.layers.0.self_attn.q_proj), or 'all-linear'; lm_head and embed_tokens are not "
                             f"adapted")
    return names


def linear_modules(model_config: ModelConfig) -> list[str]:
    """Every module LoRA can adapt, by its Hugging Face path ("model.layers.0.self_attn.q_proj"), in model order."""
    return [f"model.layers.{i}.{p}" for i in range(model_config.num_layers) for p in PROJECTIONS]


def matches_target(module: str, target: str) -> bool:
    """PEFT's rule for a list entry: the module's full name, or a suffix of it after a dot."""
    return module == target or module.endswith("." + target)


def target_module_names(config: LoraConfig, model_config: ModelConfig) -> list[str]:
    """The modules of this model that `config` adapts, in model order; a target matching none is refused."""
    modules = linear_modules(model_config)
    if config.target_modules == ALL_LINEAR:
        return modules
    for target in config.target_modules:
        if not any(matches_target(m, target) for m in modules):
            raise InputError(f"LoraConfig: target_modules: {target!r} matches no module of this model "
                             f"({model_config.num_layers} layers: model.layers.0 to "
                             f"model.layers.{model_config.num_layers - 1})")
    return [m for m in modules if any(matches_target(m, t) for t in config.target_modules)]


def module_shapes(model_config: ModelConfig, modules: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Module -> (out_features, in_features) of its weight."""
    shapes = expected_shapes(model_config)
    return {m: shapes[m + ".weight"] for m in modules}


def lora_key(module: str, matrix: str) -> str:
    """PEFT's saved name of a module's A or B matrix, without the adapter name."""
    return f"{PEFT_PREFIX}{module}.lora_{matrix}.weight"


class LoraAdapters:
    """The A (r, in) and B (out, r) float32 matrices of each adapted module, held on the device.

    `adapt` is what the model calls after each base projection. `enabled` turns every adapter off at once
    (`disabled()` for a block). `dropout_seed` is set by a trainer per micro-batch; each module's dropout mask
    is a pure function of it and the module's index, so a recomputed layer draws the mask it drew before."""

    def __init__(self, config: LoraConfig, weights: Mapping[str, tuple]):
        self.config = config
        self.scaling = config.scaling
        self.enabled = True
        self.dropout_seed = 0
        self._weights = dict(weights)  # module -> (A, B) Tensors
        self._index = {module: i for i, module in enumerate(self._weights)}

    @classmethod
    def from_arrays(cls, config: LoraConfig, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    device) -> "LoraAdapters":
        """Upload module -> (A, B) arrays as float32 tensors that require grad (counted as weights)."""
        from wgrpo.engine.memory import memory_kind
        from wgrpo.engine.tensor import Tensor

        weights = {}
        with memory_kind("weights"):
            for module, (a, b) in arrays.items():
                weights[module] = tuple(Tensor.from_numpy(widen(m), device).requires_grad_() for m in (a, b))
        return cls(config, weights)

    # ------------------------------------------------------------------ forward

    def adapt(self, name: str, x, y, training: bool = False):
        """y + scaling * B(A(dropout(x))) for an adapted module `name` (its base output y = linear(x, W)); y
        unchanged for other modules or while disabled. Dropout only while `training`."""
        from wgrpo.engine import ops

        update = self._low_rank(name, x, training)
        if update is None:
            return y
        low, b = update
        return ops.add(y, ops.linear(low, b))

    def adapt_columns(self, name: str, x, y, start: int, training: bool = False):
        """`adapt` for a module whose base output is columns start .. start + out of y (..., width), the output of
        one matmul on several modules' weights (`ops.fused_linear`): its update is accumulated into those columns
        in place (`ops.add_linear_columns`, no add), and the result returned; y itself for other modules or while
        disabled."""
        from wgrpo.engine import ops

        update = self._low_rank(name, x, training)
        if update is None:
            return y
        low, b = update
        return ops.add_linear_columns(y, low, b, start)

    def _low_rank(self, name: str, x, training: bool):
        """(scaling * (dropout(x) @ A.T), B) of module `name`'s update, or None when it has none (or adapters are
        off); the scaling goes on the (.., r) intermediate: r columns scaled rather than out."""
        from wgrpo.engine import ops

        weights = self._weights.get(name) if self.enabled else None
        if weights is None:
            return None
        a, b = weights
        if training and self.config.lora_dropout > 0:
            x = ops.dropout(x, self.config.lora_dropout, self.module_seed(name))
        return ops.scale(ops.linear(x, a), self.scaling), b

    def module_seed(self, name: str) -> int:
        """The dropout seed of module `name` for the current `dropout_seed`: distinct for every (seed, module)."""
        return (int(self.dropout_seed) * len(self._index) + self._index[name]) % 2**32

    @contextlib.contextmanager
    def disabled(self):
        """Inside, every adapter is off (the base model alone); restores the previous state after."""
        previous, self.enabled = self.enabled, False
        try:
            yield self
        finally:
            self.enabled = previous

    # ------------------------------------------------------------------ parameters

    @property
    def module_names(self) -> list[str]:
        return list(self._weights)

    def weights(self, module: str) -> tuple:
        """(A, B) tensors of `module`."""
        return self._weights[module]

    def named_parameters(self) -> dict:
        """PEFT's saved names -> tensors, module by module in model order, A before B."""
        out = {}
        for module, (a, b) in self._weights.items():
            out[lora_key(module, "A")], out[lora_key(module, "B")] = a, b
        return out

    def parameters(self) -> list:
        return list(self.named_parameters().values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every matrix as float32 numpy under PEFT's name (one read-back each)."""
        return {key: t.numpy() for key, t in self.named_parameters().items()}

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """module -> (A, B) as float32 numpy."""
        return {module: (a.numpy(), b.numpy()) for module, (a, b) in self._weights.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray], source: str = "LoraAdapters.load_state_dict") -> None:
        """Copy `state` (PEFT's names -> arrays, exactly this adapter's keys and shapes) into the tensors in
        place, so an optimizer holding them keeps working."""
        from wgrpo.engine.tensor import Tensor

        params = self.named_parameters()
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if missing or unexpected:
            what = (f"missing {missing[:3]}" if missing else "") + ("; " if missing and unexpected else "") + \
                   (f"unexpected {unexpected[:3]}" if unexpected else "")
            raise InputError(f"{source}: the keys differ from this adapter's: {what}")
        for key, tensor in params.items():
            array = np.asarray(state[key])
            if array.shape != tensor.shape:
                raise InputError(f"{source}: tensor {key!r} has shape {array.shape}, expected {tensor.shape}")
        for key, tensor in params.items():
            new = Tensor.from_numpy(widen(state[key]), tensor.device)
            for src, dst in zip(new.parts, tensor.parts, strict=True):  # same shape, so the same row blocks
                tensor.runtime.copy(src, dst)

    def __repr__(self) -> str:
        c = self.config
        return (f"LoraAdapters({len(self._weights)} modules, r={c.r}, lora_alpha={c.lora_alpha}, "
                f"scaling={self.scaling:g}, enabled={self.enabled})")


def init_lora_arrays(config: LoraConfig, shapes: Mapping[str, tuple[int, int]],
                     seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PEFT's default initialization: A (r, in) kaiming-uniform with a=sqrt(5), i.e. uniform(+-1/sqrt(in)),
    B (out, r) zeros, so the adapted model starts as the base. Module by module from one seeded generator."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for module, (out_features, in_features) in shapes.items():
        bound = 1.0 / math.sqrt(in_features)
        a = rng.uniform(-bound, bound, (config.r, in_features)).astype(np.float32)
        arrays[module] = (a, np.zeros((out_features, config.r), np.float32))
    return arrays


def attach_lora(model, config: LoraConfig, seed: int = 0) -> LoraAdapters:
    """Add freshly initialized adapters (`init_lora_arrays`) to the modules `config` targets, as PEFT's
    get_peft_model; sets and returns `model.adapters`. The base weights are untouched (and stay frozen)."""
    if not isinstance(config, LoraConfig):
        raise TypeError(f"attach_lora: config must be a LoraConfig, got {type(config).__name__}")
    if model.adapters is not None:
        raise ValueError("attach_lora: the model already has adapters; set model.adapters = None first")
    shapes = module_shapes(model.config, target_module_names(config, model.config))
    model.adapters = LoraAdapters.from_arrays(config, init_lora_arrays(config, shapes, seed), model.device)
    return model.adapters


def merge_lora_weights(state: Mapping[str, np.ndarray], arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       scaling: float) -> dict[str, np.ndarray]:
    """The state dict with each adapted weight replaced by W + scaling * B @ A, computed in float32 and stored
    in W's dtype; every other tensor is the same array."""
    merged = dict(state)
    for module, (a, b) in arrays.items():
        name = module + ".weight"
        weight = np.asarray(state[name])
        delta = widen(b).astype(np.float32) @ widen(a).astype(np.float32)
        if delta.shape != weight.shape:
            raise InputError(f"merge: the adapter of {module} makes a {delta.shape} update for a {weight.shape} "
                             f"weight")
        merged[name] = convert((widen(weight) + np.float32(scaling) * delta).astype(FLOAT32), weight.dtype)
    return merged


def merged_state_dict(model) -> dict[str, np.ndarray]:
    """The model's state dict with its adapters merged into the base weights (`merge_lora_weights`): a plain
    checkpoint that computes what base + adapters compute (up to the rounding of a 16-bit base)."""
    if model.adapters is None:
        raise ValueError("merged_state_dict: the model has no adapters")
    return merge_lora_weights(model.state_dict(), model.adapters.arrays(), model.adapters.scaling)


def merge_and_unload(model):
    """A plain model (no adapters) whose weights are `model`'s with its adapters merged, in its dtype, as PEFT's
    merge_and_unload(); `model` itself when it has no adapters."""
    from wgrpo.engine.model import Model

    if model.adapters is None:
        return model
    merged = Model.from_numpy(model.config, merged_state_dict(model), model.device, source="merged adapter")
    merged.name_or_path = model.name_or_path
    return merged


__all__ = ["ALL_LINEAR", "PEFT_PREFIX", "PROJECTIONS", "LoraAdapters", "LoraConfig", "attach_lora",
           "init_lora_arrays", "linear_modules", "lora_key", "matches_target", "merge_lora_weights",
           "merge_and_unload", "merged_state_dict", "module_shapes", "target_module_names"]
