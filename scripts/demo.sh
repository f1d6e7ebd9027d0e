#!/usr/bin/env bash
# make demo: the main job for a few seconds on the best backend found: threads 1, 2, 4 running the
# built-in MLP at once, every output checked against a single-threaded reference, then a batcher
# run with 16 client threads.
set -euo pipefail
build=${1:-build}
"$build/streampool" run --duration 1 --threads 1,2,4
echo
exec "$build/streampool" run --duration 1 --batcher --clients 16
