"""The process in which `engine.tokenizer.train_tokenizer` trains its BPE, run as a script (`python -I
bpe_worker.py`): on stdin one JSON line of settings, then one JSON string per line (the training pieces); on
stdout, once trained, the tokenizer's JSON.

A process of its own because the Rust trainer cannot be stopped: its caller's Ctrl-C kills this process, and
nothing of it is left running in the caller's interpreter (where a thread returning from Rust during shutdown
aborts the whole process). Imports only the standard library and `tokenizers`, the latter from the caller's
`sys.path`, which the settings carry.
"""

from __future__ import annotations

import json
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C in the terminal ends this process at once
    settings = json.loads(sys.stdin.readline())
    sys.path[:] = settings["sys_path"]
    from tokenizers import Tokenizer, pre_tokenizers, trainers

    tokenizer = Tokenizer.from_str(settings["tokenizer"])
    trainer = trainers.BpeTrainer(**settings["trainer"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator((json.loads(line) for line in sys.stdin), trainer=trainer)
    sys.stdout.write(tokenizer.to_str())


if __name__ == "__main__":
    main()
