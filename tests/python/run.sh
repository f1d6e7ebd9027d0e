#!/usr/bin/env bash
# Builds (once) a venv with numpy and safetensors from PyPI next to the CLI, in the build folder,
# and runs crosscheck.py. Prints "skipped: ..." and exits 0 when python3, venv, pip or the network
# is not available, so CI without them reports a skip rather than a failure.
set -uo pipefail
cli=$(readlink -f "$1")
here=$(cd "$(dirname "$0")" && pwd)
build=$(dirname "$cli")
venv=$build/python-venv
command -v python3 >/dev/null || { echo "skipped: no python3"; exit 0; }
if ! "$venv/bin/python" -c "import numpy, safetensors" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >/dev/null 2>&1 || { echo "skipped: python3 -m venv failed (python3-venv missing?)"; exit 0; }
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --retries 1 --timeout 20 \
      numpy safetensors >"$build/python-venv.log" 2>&1; then
    echo "skipped: pip could not install numpy and safetensors (offline?); see $build/python-venv.log"
    exit 0
  fi
fi
exec "$venv/bin/python" "$here/crosscheck.py" "$cli" "$build/python-crosscheck"
