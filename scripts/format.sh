#!/usr/bin/env bash
# The house style is .clang-format (clang-format 14, Debian's). `scripts/format.sh` rewrites every
# C, C++ and CUDA file in place; `scripts/format.sh --check` lists the files that differ and fails
# (CI runs it). Generated files (a first line saying "generated") are left as their generator
# writes them.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "format: clang-format is not installed (apt-get install clang-format)"; exit 1; }
files=()
while IFS= read -r f; do
  head -n 3 "$f" | grep -qi 'generated' && continue
  files+=("$f")
done < <(git ls-files '*.c' '*.h' '*.cpp' '*.cu')
if [ "${1:-}" = --check ]; then
  bad=0
  for f in "${files[@]}"; do
    clang-format "$f" | cmp -s - "$f" || { echo "format: $f differs from .clang-format (run scripts/format.sh)"; bad=1; }
  done
  [ $bad -eq 0 ] && echo "format: ${#files[@]} files match .clang-format"
  exit $bad
fi
clang-format -i "${files[@]}"
