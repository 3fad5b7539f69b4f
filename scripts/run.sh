#!/usr/bin/env bash
# The quick start: set up, show the adapter, and run the main job: the R1-Zero demonstration on a fresh tiny
# model (tokenizer, warm-up, GRPO, a before/after table and runs/grpo/curves.png). Extra arguments go to
# `wgrpo train` (see `.venv/bin/wgrpo train --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
WGRPO_EXTRAS=${WGRPO_EXTRAS:-plot} bash scripts/setup.sh  # plot: matplotlib draws curves.png
.venv/bin/wgrpo devices | tail -n 1
exec .venv/bin/wgrpo train "$@"
