#!/usr/bin/env bash
# make demo: the main job for a few seconds on the best backend found.
set -euo pipefail
build=${1:-build}
exec "$build/streampool" run --duration 2 --threads 1,2,4
