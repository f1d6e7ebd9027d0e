#!/usr/bin/env bash
# Goal: every link in the README, docs/ and the public header points to a file that exists.
# Method: collect markdown links [text](path) and bare mentions of docs/*.md and of repository
# paths such as examples/x.c or src/x/y.h; resolve each against the repository root (and, for
# markdown links, against the linking file's folder); fail listing every missing target.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
missing=0
check() { # check FILE TARGET
  local from=$1 to=${2%%#*}
  [ -z "$to" ] && return
  case $to in http://*|https://*|mailto:*) return;; esac
  [ -e "$to" ] || [ -e "$(dirname "$from")/$to" ] || { echo "FAIL $from -> $to"; missing=$((missing + 1)); }
}
files=(README.md docs/*.md include/streampool.h include/streampool/*.h)
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  while read -r t; do check "$f" "$t"; done < <(grep -oE '\]\([^) ]+\)' "$f" | sed -E 's/^\]\((.*)\)$/\1/')
  while read -r t; do check "$f" "$t"; done < <(grep -oE '\b(docs|examples|src|tests|tools|bench|scripts|python|include)/[A-Za-z0-9_./-]+\.(md|c|h|cu|sh|py|pml|html|txt|toml)\b' "$f")
done
[ $missing -eq 0 ] && echo "docs links: all targets exist (${#files[@]} files)"
exit $((missing != 0))
