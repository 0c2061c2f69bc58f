#!/usr/bin/env bash
# Quick start, command 2: set up with test tools, lint, run the tests. Fails when no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: no tests were collected" >&2
  exit 1
fi
# The wheels: built, installed without -e into a fresh venv, `lever plugins` and a tiny `lever ab` from there.
# Skipped when tests are picked by path or -k (a partial run); LEVER_CHECK_WHEELS=1/0 forces it on/off.
partial=0
for a in "$@"; do case "$a" in -k|tests/*|*.py|*::*) partial=1 ;; esac; done
if [ "$rc" -eq 0 ] && [ "${LEVER_CHECK_WHEELS:-$((1 - partial))}" = "1" ]; then
  .venv/bin/python scripts/check_wheels.py || rc=$?
fi
exit "$rc"
