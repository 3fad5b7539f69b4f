"""`wgrpo generate`: sample completions of a prompt from a checkpoint, streaming the text as it is decoded.

Owns: `GenerateConfig` and `run_generate`. The sampling itself is `engine.generate`'s. Must not import `rl`.
With one sample (`-n 1`) the text is printed as each chunk of K decode steps is read back; with several, each
completion is printed when the batch is done, under a `--- sample i (finish reason) ---` line. A summary
(tokens, tokens/s) goes to stderr.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class GenerateConfig:
    """Options of `wgrpo generate`."""

    model: str = field(default="", metadata={"help": "Hugging Face checkpoint directory (with tokenizer.json)",
                                             "metavar": "DIR"})
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
        for name in ("num_samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.steps_per_submit < 0:
            raise ValueError(f"--steps-per-submit must be at least 0 (0 = default), got {self.steps_per_submit}")


def run_generate(config: GenerateConfig, device_spec: str | None = None, out=None) -> int:
    from wgrpo.engine.device import get_device
    from wgrpo.engine.generate import generate
    from wgrpo.engine.model import load_pretrained

    out = out or sys.stdout
    if not config.model:
        raise ValueError("--model DIR is required: a checkpoint directory with tokenizer.json")
    if not config.prompt:
        raise ValueError("--prompt is empty: generation needs at least one prompt token")
    model, tokenizer = load_pretrained(config.model, get_device(device_spec))
    if tokenizer is None:
        raise ValueError(f"--model {config.model}: no tokenizer.json in the checkpoint to encode the prompt with")
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
