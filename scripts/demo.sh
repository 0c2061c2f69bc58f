#!/usr/bin/env bash
# Quick start, command 1: set up, then base vs +LEVER on the bundled Debian debtags data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/lever plugins
.venv/bin/lever ab --data data/debtags-bookworm --config configs/debtags.toml --out "${1:-runs/demo}" --reference plt
