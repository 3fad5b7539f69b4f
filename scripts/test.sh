#!/usr/bin/env bash
# Set up with the test, oracle and bench extras (torch + transformers for the model checks, TRL for the GRPO
# benchmark's comparison) and run the whole suite twice: as the adapter is, then with the storage binding limit
# capped at 1 MiB, so every tensor over it is held in row blocks and the split paths of the ops run on the tests'
# small models too, and with CPU adapters reading f32 quads as 4 words (WGRPO_WIDE_READS=0), as GPUs do, so the
# kernels' narrow reads run on lavapipe too (the tests on a local Ray run in the first pass only: their models are
# far below the cap).
set -euo pipefail
cd "$(dirname "$0")/.."
WGRPO_EXTRAS=${WGRPO_EXTRAS:-test,oracle,bench} bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
echo "--- again with WGRPO_MAX_BINDING_BYTES=1M (tensors over 1 MiB held in row blocks) and WGRPO_WIDE_READS=0"
echo "    (narrow reads); the Ray tests once is enough: their models are far below the cap"
WGRPO_MAX_BINDING_BYTES=1M WGRPO_WIDE_READS=0 exec .venv/bin/python -m pytest -m "not ray" "$@"
