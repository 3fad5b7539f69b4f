#!/usr/bin/env bash
# The quick start: set up, list the adapters, and run a short kernel benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/wgrpo devices
.venv/bin/wgrpo bench --quick "$@"
