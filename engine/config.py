"""The model's shape: one `ModelConfig` dataclass for the Llama/Qwen2 decoder family, and its translation to and
from a Hugging Face `config.json` dictionary.

Owns: field validation and the HF <-> wgrpo field mapping (both transformers-4 `rope_theta` and transformers-5
`rope_parameters`). Host-only: must not import wgpu, `engine.device`/`engine.runtime` or `rl`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from wgrpo.engine.errors import InputError

SUPPORTED_ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}
_CLASS_OF = {model_type: cls for cls, model_type in SUPPORTED_ARCHITECTURES.items()}


@dataclass
class ModelConfig:
    """Sizes and options of a Llama/Qwen2-style decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP)."""

    architecture: str = field(default="qwen2", metadata={"help": 'model family: "qwen2" or "llama" (HF model_type)'})
    vocab_size: int = field(default=1024, metadata={"help": "number of token ids (rows of the embedding)"})
    hidden_size: int = field(default=256, metadata={"help": "model width C (HF hidden_size)"})
    num_layers: int = field(default=4, metadata={"help": "decoder blocks (HF num_hidden_layers)"})
    num_heads: int = field(default=4, metadata={"help": "query heads (HF num_attention_heads)"})
    num_kv_heads: int = field(
        default=4, metadata={"help": "key/value heads for grouped-query attention (HF num_key_value_heads); "
                                     "must divide num_heads"})
    intermediate_size: int = field(default=768, metadata={"help": "SwiGLU MLP width (HF intermediate_size)"})
    max_position_embeddings: int = field(default=2048, metadata={"help": "longest sequence the model is meant for"})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base frequency (HF rope_theta)"})
    rms_norm_eps: float = field(default=1e-6, metadata={"help": "epsilon inside every RMSNorm"})
    attention_bias: bool | None = field(
        default=None, metadata={"help": "q/k/v projections carry a bias (o_proj never does); None: from the "
                                        "architecture (Qwen2: true, Llama: false; neither may differ)"})
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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"ModelConfig.{name}: expected a positive integer, got {value!r}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"ModelConfig.{name}: expected a positive number, got {value!r}")
            setattr(self, name, float(value))
        if self.hidden_size % self.num_heads:
            raise InputError(f"ModelConfig: hidden_size ({self.hidden_size}) must be divisible by num_heads "
                             f"({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise InputError(f"ModelConfig: num_heads ({self.num_heads}) must be divisible by num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.head_dim % 2:
            raise InputError(f"ModelConfig: head_dim = hidden_size / num_heads = {self.head_dim} must be even for "
                             f"RoPE")
        if self.attention_bias is None:
            self.attention_bias = self.architecture == "qwen2"
        for name in ("attention_bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"ModelConfig.{name}: expected true or false, got {getattr(self, name)!r}")
        if self.architecture == "qwen2" and not self.attention_bias:
            raise InputError("ModelConfig.attention_bias: Qwen2 always has q/k/v biases; use architecture='llama' "
                             "for a model without them")
        if self.architecture == "llama" and self.attention_bias:
            raise InputError("ModelConfig.attention_bias: Llama's attention_bias also puts a bias on o_proj, which is "
                             "not supported; use architecture='qwen2' for q/k/v biases")
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

    def _check_token_id(self, name: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
            raise InputError(f"ModelConfig.{name}: expected a token id in [0, vocab_size={self.vocab_size}) or None, "
                             f"got {value!r}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head: hidden_size / num_heads."""
        return self.hidden_size // self.num_heads

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
        c, f, kv = self.hidden_size, self.intermediate_size, self.num_kv_heads * self.head_dim
        attention = c * c * 2 + c * kv * 2 + ((c + 2 * kv) if self.attention_bias else 0)
        block = attention + 3 * c * f + 2 * c
        head = 0 if self.tie_word_embeddings else self.vocab_size * c
        return self.vocab_size * c + self.num_layers * block + c + head

    # ---- Hugging Face config.json ---------------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
        """Read a transformers `config.json` dictionary of a Qwen2ForCausalLM or LlamaForCausalLM.

        Refuses (InputError naming `source` and the field) what the engine does not implement: rope scaling
        (yarn, llama3, linear, dynamic...), an MLP bias, sliding-window attention, an activation other than silu,
        a head_dim other than hidden_size / num_attention_heads.
        """
        if not isinstance(d, Mapping):
            raise InputError(f"{source}: expected a JSON object, got {type(d).__name__}")
        architecture = _architecture_of(d, source)

        def need(key: str) -> Any:
            if key not in d:
                raise InputError(f"{source}: missing field {key!r} (needed for a {_CLASS_OF[architecture]})")
            return d[key]

        hidden_size, num_heads = need("hidden_size"), need("num_attention_heads")
        num_kv_heads = d.get("num_key_value_heads")
        if num_kv_heads is None:
            num_kv_heads = num_heads
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise InputError(f"{source}: field 'hidden_act' is {act!r}; only 'silu' (SwiGLU) is supported")
        head_dim = d.get("head_dim")
        if head_dim is not None and isinstance(hidden_size, int) and isinstance(num_heads, int) and num_heads > 0 \
                and head_dim != hidden_size // num_heads:
            raise InputError(f"{source}: field 'head_dim' is {head_dim}, but only head_dim = hidden_size / "
                             f"num_attention_heads = {hidden_size // num_heads} is supported")
        if d.get("mlp_bias", False):
            raise InputError(f"{source}: field 'mlp_bias' is true; MLP biases are not supported")
        if architecture == "qwen2" and d.get("use_sliding_window", False):
            raise InputError(f"{source}: field 'use_sliding_window' is true; sliding-window attention is not "
                             f"supported")
        layer_types = d.get("layer_types") or []
        if any(kind != "full_attention" for kind in layer_types):
            raise InputError(f"{source}: field 'layer_types' is {layer_types!r}; only 'full_attention' layers are "
                             f"supported")
        if architecture == "qwen2":
            attention_bias = True  # Qwen2 always has q/k/v biases; transformers ignores any attention_bias field
        else:
            attention_bias = d.get("attention_bias", False)
            if attention_bias:
                raise InputError(f"{source}: field 'attention_bias' is true; for Llama that biases q, k, v and o_proj, "
                                 f"and an o_proj bias is not supported")
        kwargs = dict(
            architecture=architecture,
            vocab_size=need("vocab_size"),
            hidden_size=hidden_size,
            num_layers=need("num_hidden_layers"),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            intermediate_size=need("intermediate_size"),
            rope_theta=_rope_theta_of(d, source),
            attention_bias=attention_bias,
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
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

        Writes both the transformers-4 spellings (`rope_theta`, `torch_dtype`) and the transformers-5 ones
        (`rope_parameters`, `dtype`); each version reads its own and ignores the other.
        """
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
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rope_scaling": None,
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
        if self.architecture == "llama":
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = False
        else:
            d["use_sliding_window"] = False
        return d

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> help text (for generated CLIs)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _architecture_of(d: Mapping[str, Any], source: str) -> str:
    """Family ("qwen2"/"llama") from `architectures` (preferred) or `model_type`."""
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


def _rope_theta_of(d: Mapping[str, Any], source: str) -> float:
    """RoPE base from transformers-5 `rope_parameters` or top-level `rope_theta`; refuses any scaling."""
    theta = d.get("rope_theta")
    for key in ("rope_scaling", "rope_parameters"):
        params = d.get(key)
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise InputError(f"{source}: field {key!r} should be an object, got {params!r}")
        if any(isinstance(value, Mapping) for value in params.values()):
            raise InputError(f"{source}: field {key!r} holds per-layer-type RoPE settings; only one 'default' RoPE "
                             f"for every layer is supported")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type != "default":
            raise InputError(f"{source}: field {key!r} asks for rope_type {rope_type!r}; only 'default' RoPE "
                             f"(no scaling) is supported")
        if params.get("factor") not in (None, 1, 1.0):
            raise InputError(f"{source}: field {key!r} sets a RoPE scaling factor {params['factor']!r}; scaling is "
                             f"not supported")
        if params.get("rope_theta") is not None:
            if theta is not None and float(theta) != float(params["rope_theta"]):
                raise InputError(f"{source}: 'rope_theta' ({theta}) disagrees with {key}.rope_theta "
                                 f"({params['rope_theta']})")
            theta = params["rope_theta"]
    return 10000.0 if theta is None else theta
