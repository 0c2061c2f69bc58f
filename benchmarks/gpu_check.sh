#!/usr/bin/env bash
# One prepared check of every CUDA path of lever-plugins (issue 19, item 4): <= 8 minutes on one GPU.
#
#   bash benchmarks/gpu_prepare.sh          # HERE, once, with the package index reachable: fills .gpu/
#   bash benchmarks/gpu_check.sh --cpu      # HERE: the same steps at toy sizes on the CPU (rehearsal)
#   bash benchmarks/gpu_check.sh            # on the GPU machine, with .gpu/ carried beside the tree
#
# On the GPU machine (no network; python3 there has torch, transformers, sentence-transformers,
# accelerate, pandas, numba, cython): the carried wheels (.gpu/wheels: faiss-cpu, nltk) and this tree
# with its adapters are installed with --no-deps into a scratch site folder, pyxclib is built from
# .gpu/pyxclib if present, a wandb stub (.gpu/stubs) stands in for wandb (ELIAS imports it; runs are
# WANDB_MODE=disabled), the upstream checkouts are read from .gpu/upstream/<name>. Then
# benchmarks/gpu_check.py runs every step and writes one JSON: $OUT/gpu_check.json when $OUT is set
# (the device tool brings $OUT back), else benchmarks/results/gpu_check.json. Extra arguments go to
# gpu_check.py (e.g. --only knn_exact,renee_backward).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 WANDB_MODE=disabled

if [ "${1:-}" = "--cpu" ]; then
  PY=${PYTHON:-.venv/bin/python}
  [ -x "$PY" ] || PY=python3
  exec "$PY" benchmarks/gpu_check.py "$@"
fi

PY=${PYTHON:-python3}
SITE=${LEVER_GPU_SITE:-/tmp/lever-site}
if [ ! -d .gpu ]; then
  echo "error: .gpu/ is missing (run 'bash benchmarks/gpu_prepare.sh' in the checkout and carry .gpu)" >&2
  exit 2
fi
t0=$(date +%s)
mkdir -p "$SITE"
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/wheels/*.whl \
    || echo "warning: the carried wheels did not install" >&2
fi
export PYTHONPATH="$SITE:$PWD/.gpu/stubs${PYTHONPATH:+:$PYTHONPATH}"
# The tree and its adapters, without dependencies (the machine has them) and without network.
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" \
  . adapters/elias adapters/cascadexml adapters/renee \
  || { echo "error: could not install lever-plugins into $SITE" >&2; exit 2; }
if [ -d .gpu/pyxclib ]; then
  if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" .gpu/pyxclib \
      > /tmp/pyxclib-build.log 2>&1; then
    echo "pyxclib built"
  else
    echo "warning: pyxclib did not build (tail below); the ELIAS/CascadeXML steps will say what fails" >&2
    tail -5 /tmp/pyxclib-build.log >&2
  fi
fi
echo "install: $(( $(date +%s) - t0 )) s"
out="${OUT:+$OUT/gpu_check.json}"
exec "$PY" benchmarks/gpu_check.py --out "${out:-benchmarks/results/gpu_check.json}" --budget "${BUDGET:-400}" \
  --workdir "${LEVER_GPU_WORK:-/tmp/lever-gpu-check}" "$@"
