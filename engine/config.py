"""The model's shape: one `ModelConfig` dataclass for the Llama/Qwen2/Qwen3 decoder family, and its translation to
and from a Hugging Face `config.json` dictionary.

Owns: field validation and the HF <-> wgrpo field mapping (both transformers-4 `rope_theta` / `rope_scaling` and
transformers-5 `rope_parameters`). Host-only: must not import wgpu, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from wgrpo.engine.errors import InputError

SUPPORTED_ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama"}
_CLASS_OF = {model_type: cls for cls, model_type in SUPPORTED_ARCHITECTURES.items()}
ROPE_TYPES = ("default", "linear", "llama3")
# HF rope-parameter keys each scaled RoPE type reads (all but rope_theta are ModelConfig's rope_<key> fields)
_ROPE_KEYS = {"default": (), "linear": ("factor",),
              "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
# transformers' Qwen3Config default, used when a Qwen3 config.json has no head_dim
_QWEN3_DEFAULT_HEAD_DIM = 128


@dataclass
class ModelConfig:
    """Sizes and options of a Llama/Qwen-style decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP; Qwen3 adds a
    per-head RMSNorm on q and k)."""

    architecture: str = field(default="qwen2", metadata={"help": 'model family: "qwen2", "qwen3" or "llama" '
                                                                 '(HF model_type)'})
    vocab_size: int = field(default=1024, metadata={"help": "number of token ids (rows of the embedding)"})
    hidden_size: int = field(default=256, metadata={"help": "model width C (HF hidden_size)"})
    num_layers: int = field(default=4, metadata={"help": "decoder blocks (HF num_hidden_layers)"})
    num_heads: int = field(default=4, metadata={"help": "query heads (HF num_attention_heads)"})
    num_kv_heads: int = field(
        default=4, metadata={"help": "key/value heads for grouped-query attention (HF num_key_value_heads); "
                                     "must divide num_heads"})
    explicit_head_dim: int | None = field(
        default=None, metadata={"help": "width D of one attention head when it is not hidden_size / num_heads (HF "
                                        "head_dim; Qwen3, Llama 3.2); None: hidden_size / num_heads"})
    intermediate_size: int = field(default=768, metadata={"help": "SwiGLU MLP width (HF intermediate_size)"})
    max_position_embeddings: int = field(default=2048, metadata={"help": "longest sequence the model is meant for"})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base frequency (HF rope_theta)"})
    rope_type: str = field(
        default="default", metadata={"help": 'RoPE frequencies: "default", "linear" (all divided by rope_factor) or '
                                             '"llama3" (Llama 3.1 band-wise scaling)'})
    rope_factor: float = field(default=1.0, metadata={"help": "RoPE scaling factor (linear and llama3 only)"})
    rope_low_freq_factor: float = field(default=1.0, metadata={"help": "llama3 RoPE low_freq_factor"})
    rope_high_freq_factor: float = field(default=4.0, metadata={"help": "llama3 RoPE high_freq_factor"})
    rope_original_max_position_embeddings: int | None = field(
        default=None, metadata={"help": "llama3 RoPE pretraining context when it is not max_position_embeddings; "
                                        "None: max_position_embeddings"})
    rms_norm_eps: float = field(default=1e-6, metadata={"help": "epsilon inside every RMSNorm"})
    attention_bias: bool | None = field(
        default=None, metadata={"help": "q/k/v projections carry a bias (o_proj never does); None: from the "
                                        "architecture (Qwen2: true, Llama and Qwen3: false; neither may differ)"})
    tie_word_embeddings: bool = field(
        default=False, metadata={"help": "lm_head shares the embedding matrix (no lm_head.weight tensor)"})
    bos_token_id: int | None = field(default=None, metadata={"help": "beginning-of-sequence token id, if any"})
    eos_token_id: int | list[int] | None = field(
        default=None, metadata={"help": "end-of-sequence token id, or a list of ids that all end generation"})
    pad_token_id: int | None = field(default=None, metadata={"help": "padding token id, if any"})

    def __post_init__(self):
        if self.architecture not in _CLASS_OF:
            raise InputError(f"ModelConfig.architecture: expected one of {sorted(_CLASS_OF)}, got "
                             f"{self.architecture!r}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "max_position_embeddings"):
            _check_positive_int(name, getattr(self, name))
        for name in ("rope_theta", "rms_norm_eps"):
            setattr(self, name, _positive_float(name, getattr(self, name)))
        self._check_heads()
        self._check_rope()
        if self.attention_bias is None:
            self.attention_bias = self.architecture == "qwen2"
        for name in ("attention_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"ModelConfig.{name}: expected true or false, got {getattr(self, name)!r}")
        if self.architecture == "qwen2" and not self.attention_bias:
            raise InputError("ModelConfig.attention_bias: Qwen2 always has q/k/v biases; use architecture='llama' "
                             "for a model without them")
        if self.architecture != "qwen2" and self.attention_bias:
            raise InputError(f"ModelConfig.attention_bias: {self.hf_class}'s attention_bias also puts a bias on "
                             f"o_proj, which is not supported; use architecture='qwen2' for q/k/v biases")
        for name in ("bos_token_id", "pad_token_id"):
            self._check_token_id(name, getattr(self, name))
        if isinstance(self.eos_token_id, (list, tuple)):
            if not self.eos_token_id:
                raise InputError("ModelConfig.eos_token_id: an empty list; use None for no end-of-sequence token")
            for token in self.eos_token_id:
                self._check_token_id("eos_token_id", token)
            self.eos_token_id = list(self.eos_token_id) if len(self.eos_token_id) > 1 else int(self.eos_token_id[0])
        else:
            self._check_token_id("eos_token_id", self.eos_token_id)

    # Values equal to what they default to are stored as None, so that equal models compare equal and
    # dataclasses.replace(config, hidden_size=...) recomputes them.
    def _check_heads(self) -> None:
        derived = None if self.hidden_size % self.num_heads else self.hidden_size // self.num_heads
        if self.explicit_head_dim is None:
            if derived is None:
                raise InputError(f"ModelConfig: hidden_size ({self.hidden_size}) must be divisible by num_heads "
                                 f"({self.num_heads}) when explicit_head_dim is not given")
        else:
            _check_positive_int("explicit_head_dim", self.explicit_head_dim)
            if self.explicit_head_dim == derived:
                self.explicit_head_dim = None
        if self.num_heads % self.num_kv_heads:
            raise InputError(f"ModelConfig: num_heads ({self.num_heads}) must be divisible by num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.head_dim % 2:
            raise InputError(f"ModelConfig.head_dim: {self.head_dim} must be even for RoPE")

    def _check_rope(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise InputError(f"ModelConfig.rope_type: expected one of {list(ROPE_TYPES)}, got {self.rope_type!r}")
        for name in ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
            setattr(self, name, _positive_float(name, getattr(self, name)))
        if self.rope_type == "llama3":
            if self.rope_original_max_position_embeddings is not None:
                _check_positive_int("rope_original_max_position_embeddings",
                                    self.rope_original_max_position_embeddings)
                if self.rope_original_max_position_embeddings == self.max_position_embeddings:
                    self.rope_original_max_position_embeddings = None
            if not self.rope_high_freq_factor > self.rope_low_freq_factor:
                raise InputError(f"ModelConfig.rope_high_freq_factor: must exceed rope_low_freq_factor "
                                 f"({self.rope_low_freq_factor}), got {self.rope_high_freq_factor}")
        used = {"rope_" + key for key in _ROPE_KEYS[self.rope_type]}
        for f in fields(self):
            if f.name in ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                          "rope_original_max_position_embeddings") and f.name not in used \
                    and getattr(self, f.name) != f.default:
                raise InputError(f"ModelConfig.{f.name}: {getattr(self, f.name)!r} is not used by rope_type "
                                 f"{self.rope_type!r}; leave it at {f.default!r} or pick a rope_type that reads it")

    def _check_token_id(self, name: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
            raise InputError(f"ModelConfig.{name}: expected a token id in [0, vocab_size={self.vocab_size}) or None, "
                             f"got {value!r}")

    @property
    def head_dim(self) -> int:
        """Width D of one attention head: explicit_head_dim, else hidden_size / num_heads."""
        return self.hidden_size // self.num_heads if self.explicit_head_dim is None else self.explicit_head_dim

    @property
    def qk_norm(self) -> bool:
        """Each attention layer RMS-normalizes every q and k head (Qwen3's q_norm / k_norm) before RoPE."""
        return self.architecture == "qwen3"

    @property
    def rope_parameters(self) -> dict[str, Any]:
        """The RoPE settings as transformers-5 `rope_parameters` (rope_type, rope_theta and the type's own keys);
        also the keyword arguments of `engine.ops.rope.rope_inv_freq`."""
        params: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        for key in _ROPE_KEYS[self.rope_type]:
            params[key] = getattr(self, "rope_" + key)
        if self.rope_type == "llama3" and params["original_max_position_embeddings"] is None:
            params["original_max_position_embeddings"] = self.max_position_embeddings  # transformers' default
        return params

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Every id that ends generation (empty when none is set)."""
        if self.eos_token_id is None:
            return ()
        return tuple(self.eos_token_id) if isinstance(self.eos_token_id, list) else (self.eos_token_id,)

    @property
    def hf_class(self) -> str:
        """The transformers class name (`architectures[0]` of config.json)."""
        return _CLASS_OF[self.architecture]

    def num_parameters(self) -> int:
        """Parameter count, the lm_head counted only when untied."""
        c, f = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attention = 2 * c * q + 2 * c * kv + ((q + 2 * kv) if self.attention_bias else 0)
        attention += 2 * self.head_dim if self.qk_norm else 0
        block = attention + 3 * c * f + 2 * c
        head = 0 if self.tie_word_embeddings else self.vocab_size * c
        return self.vocab_size * c + self.num_layers * block + c + head

    # ---- Hugging Face config.json ---------------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
        """Read a transformers `config.json` dictionary of a Qwen2ForCausalLM, Qwen3ForCausalLM or LlamaForCausalLM.

        Refuses (InputError naming `source` and the field) what the engine does not implement: RoPE types other
        than default, linear and llama3 (yarn, dynamic, longrope...), partial rotary embeddings, an MLP bias,
        Llama/Qwen3 attention biases (they include o_proj), sliding-window attention, an activation other than silu.
        Fields config.json omits take the transformers class's default (Qwen3: head_dim 128).
        """
        if not isinstance(d, Mapping):
            raise InputError(f"{source}: expected a JSON object, got {type(d).__name__}")
        architecture = _architecture_of(d, source)

        def need(key: str) -> Any:
            if key not in d:
                raise InputError(f"{source}: missing field {key!r} (needed for a {_CLASS_OF[architecture]})")
            return d[key]

        num_heads = need("num_attention_heads")
        num_kv_heads = d.get("num_key_value_heads")
        if num_kv_heads is None:
            num_kv_heads = num_heads
        head_dim = d.get("head_dim")
        if head_dim is None and architecture == "qwen3":
            head_dim = _QWEN3_DEFAULT_HEAD_DIM
        _refuse_unsupported_features(d, architecture, source)
        kwargs = dict(
            architecture=architecture,
            vocab_size=need("vocab_size"),
            hidden_size=need("hidden_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            explicit_head_dim=head_dim,
            intermediate_size=need("intermediate_size"),
            # Qwen2 always has q/k/v biases; transformers ignores any attention_bias field
            attention_bias=architecture == "qwen2" or d.get("attention_bias", False),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
            **_rope_settings_of(d, source),
        )
        for key in ("max_position_embeddings", "rms_norm_eps"):
            if d.get(key) is not None:
                kwargs[key] = d[key]
        try:
            return cls(**kwargs)
        except ValueError as error:
            raise InputError(f"{source}: {error}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """A `config.json` dictionary that transformers 4 and 5 load as the matching *ForCausalLM class.

        Writes both the transformers-4 spellings (`rope_theta`, `rope_scaling`, `torch_dtype`) and the
        transformers-5 ones (`rope_parameters`, `dtype`); each version reads its own and ignores the other.
        """
        rope = self.rope_parameters
        d: dict[str, Any] = {
            "architectures": [self.hf_class],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            # transformers 4 spells scaling without rope_theta; transformers 5 prefers this field when it is set
            "rope_scaling": None if self.rope_type == "default" else
            {key: value for key, value in rope.items() if key != "rope_theta"},
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
            "dtype": "float32",
            "use_cache": True,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
        }
        if self.architecture != "qwen2":
            d["attention_bias"] = self.attention_bias
        if self.architecture == "llama":
            d["mlp_bias"] = False
        else:
            d["use_sliding_window"] = False
            d["sliding_window"] = None
        return d

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> help text (for generated CLIs)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"ModelConfig.{name}: expected a positive integer, got {value!r}")


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"ModelConfig.{name}: expected a positive number, got {value!r}")
    return float(value)


def _architecture_of(d: Mapping[str, Any], source: str) -> str:
    """Family ("qwen2"/"qwen3"/"llama") from `architectures` (preferred) or `model_type`."""
    supported = ", ".join(f"{cls} (model_type {mt!r})" for cls, mt in SUPPORTED_ARCHITECTURES.items())
    architectures = d.get("architectures")
    if architectures:
        if isinstance(architectures, str):
            architectures = [architectures]
        known = [a for a in architectures if a in SUPPORTED_ARCHITECTURES]
        if not known:
            raise InputError(f"{source}: unsupported architectures {list(architectures)!r}; supported: {supported}")
        architecture = SUPPORTED_ARCHITECTURES[known[0]]
        model_type = d.get("model_type")
        if model_type is not None and model_type != architecture:
            raise InputError(f"{source}: architectures {list(architectures)!r} disagrees with model_type "
                             f"{model_type!r}")
        return architecture
    model_type = d.get("model_type")
    if model_type in _CLASS_OF:
        return model_type
    if model_type is None:
        raise InputError(f"{source}: neither 'architectures' nor 'model_type' is set; supported: {supported}")
    raise InputError(f"{source}: unsupported model_type {model_type!r}; supported: {supported}")


def _refuse_unsupported_features(d: Mapping[str, Any], architecture: str, source: str) -> None:
    """InputError for the config.json options of these classes that the engine does not implement."""
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise InputError(f"{source}: field 'hidden_act' is {act!r}; only 'silu' (SwiGLU) is supported")
    if d.get("mlp_bias", False):
        raise InputError(f"{source}: field 'mlp_bias' is true; MLP biases are not supported")
    if architecture != "qwen2" and d.get("attention_bias", False):
        raise InputError(f"{source}: field 'attention_bias' is true; for {_CLASS_OF[architecture]} that biases q, "
                         f"k, v and o_proj, and an o_proj bias is not supported")
    if architecture != "llama" and d.get("use_sliding_window", False):
        raise InputError(f"{source}: field 'use_sliding_window' is true; sliding-window attention is not "
                         f"supported")
    layer_types = d.get("layer_types") or []
    if any(kind != "full_attention" for kind in layer_types):
        raise InputError(f"{source}: field 'layer_types' is {layer_types!r}; only 'full_attention' layers are "
                         f"supported")
    if d.get("partial_rotary_factor") not in (None, 1, 1.0):
        raise InputError(f"{source}: field 'partial_rotary_factor' is {d['partial_rotary_factor']!r}; only RoPE "
                         f"over the whole head (1.0) is supported")


def _rope_settings_of(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    """ModelConfig's rope_* keyword arguments from top-level `rope_theta`, transformers-4 `rope_scaling` and
    transformers-5 `rope_parameters` (which must agree); refuses RoPE types the engine does not implement."""
    theta = d.get("rope_theta")
    found: dict[str, dict[str, Any]] = {}
    for key in ("rope_scaling", "rope_parameters"):
        params = d.get(key)
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise InputError(f"{source}: field {key!r} should be an object, got {params!r}")
        if any(isinstance(value, Mapping) for value in params.values()):
            raise InputError(f"{source}: field {key!r} holds per-layer-type RoPE settings; only one RoPE for every "
                             f"layer is supported")
        found[key] = _scaling_of(params, key, source)
        if params.get("rope_theta") is not None:
            if theta is not None and float(theta) != float(params["rope_theta"]):
                raise InputError(f"{source}: 'rope_theta' ({theta}) disagrees with {key}.rope_theta "
                                 f"({params['rope_theta']})")
            theta = params["rope_theta"]
    if len(found) == 2 and found["rope_scaling"] != found["rope_parameters"]:
        raise InputError(f"{source}: field 'rope_scaling' ({dict(d['rope_scaling'])!r}) disagrees with "
                         f"'rope_parameters' ({dict(d['rope_parameters'])!r})")
    settings = next(iter(found.values()), {})
    return {"rope_theta": 10000.0 if theta is None else theta, **settings}


def _scaling_of(params: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    """ModelConfig's rope_type and rope_<key> arguments of one `rope_scaling` / `rope_parameters` object."""
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise InputError(f"{source}: field {key!r} asks for rope_type {rope_type!r}; supported rope types: "
                         f"{', '.join(map(repr, ROPE_TYPES))}")
    if rope_type == "default" and params.get("factor") not in (None, 1, 1.0):
        raise InputError(f"{source}: field {key!r} sets a RoPE scaling factor {params['factor']!r} with rope_type "
                         f"'default'; use rope_type 'linear' or 'llama3' for scaling")
    if params.get("partial_rotary_factor") not in (None, 1, 1.0):
        raise InputError(f"{source}: field {key!r} sets partial_rotary_factor {params['partial_rotary_factor']!r}; "
                         f"only RoPE over the whole head (1.0) is supported")
    settings: dict[str, Any] = {"rope_type": rope_type}
    for name in _ROPE_KEYS[rope_type]:
        if params.get(name) is not None:
            settings["rope_" + name] = params[name]
        elif name != "original_max_position_embeddings":  # that one defaults to max_position_embeddings
            raise InputError(f"{source}: field {key!r} (rope_type {rope_type!r}) is missing {name!r}")
    return settings
