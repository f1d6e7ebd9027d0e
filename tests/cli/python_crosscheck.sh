#!/usr/bin/env bash
# The numpy/safetensors cross-check (tests/python/run.sh) as a CLI test: $1 is the streampool CLI.
exec bash "$(dirname "$0")/../python/run.sh" "$1"
