"""`wgrpo generate`: sample completions of a prompt from a checkpoint, streaming the text as it is decoded.

Owns: `GenerateConfig` and `run_generate`, which check every option before the model loads. The sampling itself
is `engine.generate`'s; from `rl` it uses only the config type check (`rl.train.config.check_field_types`).
With one sample (`-n 1`) the text is printed as each chunk of K decode steps is read back; with several, each
completion is printed when the batch is done, under a `--- sample i (finish reason) ---` line. A summary
(tokens, tokens/s) goes to stderr.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from wgrpo.engine import InputError
from wgrpo.rl.train.config import check_field_types
from wgrpo.rl.train.fields import option_flag


@dataclass
class GenerateConfig:
    """Options of `wgrpo generate`."""

    model: str = field(default="", metadata={"help": "Hugging Face checkpoint directory (with tokenizer.json) or Hub "
                                                     "id (Qwen/Qwen2.5-0.5B-Instruct)", "metavar": "DIR|ID"})
    dtype: str = field(default="auto", metadata={
        "help": "how the weights are held on the device: auto (as the checkpoint stores them), float32, bfloat16 or "
                "float16", "choices": ("auto", "float32", "bfloat16", "float16")})
    device_memory: str = field(default="", metadata={
        "help": "bytes the device can hold, e.g. 16G; empty: $WGRPO_DEVICE_MEMORY, else the free host memory for a "
                "CPU adapter, else unchecked", "metavar": "BYTES"})
    prompt: str = field(default="", metadata={"help": "the prompt text", "metavar": "TEXT"})
    num_samples: int = field(default=1, metadata={"help": "completions to sample (also -n); they share one prefill"})
    max_new_tokens: int = field(default=128, metadata={"help": "longest completion in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature; 0 = greedy"})
    top_k: int = field(default=0, metadata={"help": "keep the k most likely tokens; 0 = off"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass in (0, 1]; 1 = off"})
    seed: int = field(default=0, metadata={"help": "sampling seed (same seed, same text)"})
    stop: str | None = field(default=None, metadata={"help": "stop string, e.g. '</answer>' (kept in the text)",
                                                     "metavar": "TEXT"})
    steps_per_submit: int = field(default=0, metadata={
        "help": "decode steps per GPU submit and per read-back (K); 0 = the adapter's default"})

    def __post_init__(self):
        check_field_types(self)
        for name in ("num_samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{option_flag(name)} {getattr(self, name)}: must be at least 1")
        for name in ("steps_per_submit", "top_k", "seed"):
            if getattr(self, name) < 0:
                raise InputError(f"{option_flag(name)} {getattr(self, name)}: must be at least 0")
        if self.seed >= 2**64:
            raise InputError(f"--seed {self.seed}: must be below 2**64 (the sampler's counter key)")
        if self.temperature < 0:
            raise InputError(f"--temperature {self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.stop == "":
            raise InputError("--stop '': a stop string must not be empty")


def check_generation_memory(config: GenerateConfig, model_config, model_dir: str, prompt_tokens: int, device) -> None:
    """Print the estimated device memory of this generation on stderr; refuse it, naming the sizes, when it is
    over what the device can hold."""
    from wgrpo.engine import check_fits, device_memory_budget, estimate_generation
    from wgrpo.engine.hf import stored_dtype

    dtype = stored_dtype(model_dir) if config.dtype == "auto" else config.dtype
    estimate = estimate_generation(model_config, dtype, 1, prompt_tokens, config.max_new_tokens,
                                   num_samples=config.num_samples, max_binding_bytes=device.max_binding_bytes)
    print(f"wgrpo: {estimate.summary()}", file=sys.stderr)
    check_fits(estimate, device_memory_budget(device, config.device_memory or None),
               advice="fewer samples (-n) or a smaller --max-new-tokens")


def run_generate(config: GenerateConfig, device_spec: str | None = None, out=None) -> int:
    from wgrpo.engine.device import get_device
    from wgrpo.engine.generate import generate
    from wgrpo.engine.model import load_pretrained
    from wgrpo.engine.hf import TOKENIZER_FILE, load_tokenizer, read_config
    from wgrpo.rl.train.pipeline import model_directory

    out = out or sys.stdout
    if not config.model:
        raise InputError("--model DIR is required: a checkpoint directory with tokenizer.json")
    if not config.prompt:
        raise InputError("--prompt is empty: generation needs at least one prompt token")
    model_dir = model_directory(config.model)
    if not (Path(model_dir) / TOKENIZER_FILE).is_file():
        raise InputError(f"--model {config.model}: no tokenizer.json in the checkpoint to encode the prompt with")
    model_config = read_config(model_dir)
    prompt_tokens = len(load_tokenizer(model_dir, model_config).encode(config.prompt).ids)
    context = model_config.max_position_embeddings
    if prompt_tokens >= context:
        raise InputError(f"--prompt: {prompt_tokens} tokens, longer than the model's context allows "
                         f"(max_position_embeddings {context}, and at least one new token)")
    device = get_device(device_spec)
    check_generation_memory(config, model_config, model_dir, prompt_tokens, device)  # before the long read
    model, tokenizer = load_pretrained(model_dir, device, config.dtype)
    streaming = config.num_samples == 1

    def on_text(_: int, text: str) -> None:
        out.write(text)
        out.flush()

    result = generate(model, [config.prompt], max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                      top_k=config.top_k, top_p=config.top_p, seed=config.seed, stop=config.stop,
                      num_samples=config.num_samples, tokenizer=tokenizer,
                      steps_per_submit=config.steps_per_submit or None, on_text=on_text if streaming else None)
    if streaming:
        out.write("\n")
    else:
        for seq in result.sequences:
            out.write(f"--- sample {seq.sample_index} ({seq.finish_reason}, {len(seq.token_ids)} tokens) ---\n")
            out.write(seq.text + "\n")
    out.flush()
    reasons = ", ".join(sorted({s.finish_reason for s in result.sequences}))
    print(f"generate: {result.generated_tokens} tokens in {result.seconds:.2f} s "
          f"({result.generated_tokens / max(result.seconds, 1e-9):.0f} tokens/s), finished by {reasons}",
          file=sys.stderr)
    return 0
