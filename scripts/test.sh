#!/usr/bin/env bash
# Set up with the test and oracle extras (torch + transformers, for the model checks) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
WGRPO_EXTRAS=${WGRPO_EXTRAS:-test,oracle} bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
