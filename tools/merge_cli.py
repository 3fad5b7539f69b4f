"""`wgrpo merge ADAPTER_DIR OUTPUT_DIR`: a PEFT LoRA adapter merged into its base model, written as a full
Hugging Face checkpoint (with the tokenizer) that transformers and `wgrpo generate` load without peft.

Owns: the subcommand's arguments and `merge_adapter`. It runs on the host in numpy (no GPU adapter needed):
each adapted weight becomes W + scaling * B @ A, computed in float32 (`engine.lora.merge_lora_weights`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter_dir", metavar="ADAPTER_DIR",
                        help="a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors)")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="where to write the merged checkpoint")
    parser.add_argument("--base", default=None, metavar="DIR|ID",
                        help="the base model (checkpoint directory or Hub id); default: the adapter's "
                             "base_model_name_or_path")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="dtype of the written tensors; auto: each as the base checkpoint stores it")


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge ADAPTER_DIR into its base model and write OUTPUT_DIR."""
    out = merge_adapter(args.adapter_dir, args.output_dir, base=args.base, dtype=args.dtype)
    print(f"merge: wrote {out}", file=sys.stderr)
    return 0


def merge_adapter(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike, base: str | None = None,
                  dtype: str = "auto") -> Path:
    """Write the merged checkpoint of the adapter in `adapter_dir` to `output_dir` and return its path.

    The tokenizer is the adapter directory's when it has one, else the base's; the base's
    generation_config.json is carried over. Refuses (InputError) an output that is the adapter's or the base's
    own directory, before anything is read."""
    from wgrpo.engine.dtypes import convert, float_dtype
    from wgrpo.engine.errors import InputError
    from wgrpo.engine.hf import (GENERATION_CONFIG_FILE, TOKENIZER_FILE, load_checkpoint, load_tokenizer,
                                 read_config, write_checkpoint)
    from wgrpo.engine.lora import merge_lora_weights
    from wgrpo.engine.peft_io import read_adapter, resolve_base

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if dtype != "auto":
        dtype = float_dtype(dtype, "merge: --dtype")  # checked before the long read
    if not adapter_dir.is_dir():
        raise InputError(f"merge: {adapter_dir}: no such adapter directory")
    base_dir, _ = resolve_base(adapter_dir, base)
    for name, path in (("adapter", adapter_dir), ("base model", base_dir)):
        if output_dir.resolve() == path.resolve():
            raise InputError(f"merge: OUTPUT_DIR {output_dir} is the {name}'s directory; write the merged model "
                             f"elsewhere")
    lora_config, arrays = read_adapter(adapter_dir, read_config(base_dir))  # checked before the long read
    config, state = load_checkpoint(base_dir, "auto")
    merged = merge_lora_weights(state, arrays, lora_config.scaling)
    if dtype != "auto":
        merged = {name: convert(array, dtype) for name, array in merged.items()}
    tokenizer_dir = adapter_dir if (adapter_dir / TOKENIZER_FILE).is_file() else base_dir
    tokenizer = load_tokenizer(tokenizer_dir, config) if (tokenizer_dir / TOKENIZER_FILE).is_file() else None
    extra = {}
    if (base_dir / GENERATION_CONFIG_FILE).is_file():  # the base's sampling defaults, not just the token ids
        extra[GENERATION_CONFIG_FILE] = (base_dir / GENERATION_CONFIG_FILE).read_bytes()
    return write_checkpoint(output_dir, config, merged, tokenizer=tokenizer, extra_files=extra)
