#!/usr/bin/env bash
# Fill .gpu/ (git-ignored, never committed) for benchmarks/gpu_check.sh; run in the checkout that the device
# tool sends (its repository root), with the package index reachable, before any device time is spent.
#
#   .gpu/upstream/{elias,cascadexml,renee}  the upstream checkouts at their tested commits, copied from
#                                           $LEVER_UPSTREAMS/<name> (default /work/upstream; make them with
#                                           `git archive <commit>`, see ../shared/upstream/<name>/SOURCE.md)
#   .gpu/pyxclib                            pyxclib source (built there; ELIAS and CascadeXML import xclib)
#   .gpu/wheels                             faiss-cpu and nltk wheels for the machine's Python 3.12
#   .gpu/tok                                the MiniLM (BERT-uncased) tokenizer (random-weight models are built there)
#   .gpu/stubs/wandb                        a no-op wandb (ELIAS always imports it)
#
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=560). The carried total
# must stay under the device tool's 64 MiB with the tree: this script prints the size.
#
# faiss-gpu is NOT carried: its cu12 wheel needs the CUDA 12 runtime and cuBLAS wheels (hundreds of MB,
# over the carry limit) and the machine's CUDA is 13. Exact kNN runs on the GPU through torch (GEMM +
# top-k, lever_plugins/soft_labels/knn.py); faiss-cpu serves the approximate indexes.
set -euo pipefail
cd "$(dirname "$0")/.."
UP=${LEVER_UPSTREAMS:-/work/upstream}
PY=${PYTHON:-.venv/bin/python}
new=.gpu.new
rm -rf "$new"
mkdir -p "$new/upstream" "$new/wheels" "$new/stubs/wandb"
for name in elias cascadexml renee; do
  if [ -d "$UP/$name" ]; then
    tar -C "$UP/$name" --exclude=.git --exclude=media --exclude='*.ipynb' --exclude='.ipynb_checkpoints' \
      --exclude='*.swp' --exclude=__pycache__ -cf - . | (mkdir -p "$new/upstream/$name" && tar -C "$new/upstream/$name" -xf -)
  else
    echo "note: no $name checkout at $UP/$name: gpu_check uses the stand-in for it" >&2
  fi
done
if [ -d "$UP/pyxclib" ]; then
  tar -C "$UP/pyxclib" --exclude=.git --exclude=build --exclude='*.so' --exclude=__pycache__ -cf - . \
    | (mkdir -p "$new/pyxclib" && tar -C "$new/pyxclib" -xf -)
else
  echo "note: no pyxclib source at $UP/pyxclib: the real ELIAS/CascadeXML steps will fail on 'import xclib'" >&2
fi
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$new/wheels" faiss-cpu==1.15.1 nltk==3.10.4 2>&1 | grep -v "^WARNING: Location" || true
"$PY" - "$new/tok" <<'PY'
import sys
from transformers import AutoTokenizer
from lever_plugins.teacher.encoder import resolve_model
AutoTokenizer.from_pretrained(resolve_model("default")).save_pretrained(sys.argv[1])
PY
cat > "$new/stubs/wandb/__init__.py" <<'PY'
"""No-op wandb for benchmarks/gpu_check.sh (ELIAS imports and calls it; runs are WANDB_MODE=disabled)."""


class _Run:
    id = "disabled"


class _Config(dict):
    def update(self, *args, **kwargs):
        pass


run = _Run()
config = _Config()


def init(*args, **kwargs):
    return run


def log(*args, **kwargs):
    pass


def finish(*args, **kwargs):
    pass
PY
rm -rf .gpu
mv "$new" .gpu
du -sh .gpu
echo "tree + .gpu: $(( ( $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) + $(du -sb .gpu | cut -f1) ) / 1048576 )) MiB (limit 64)"
