#!/usr/bin/env bash
# Checks a Promela model with spin: `run.sh MODEL.pml [ok|violation [-DNAME[=V] ...]]`.
# Without an expectation it runs every line of the model of the form " * run: ok|violation -D..."
# (each a separate exhaustive safety search: assertions and invalid end states, i.e. a process
# blocked forever). ok: the search must complete with 0 errors and nothing left unexplored;
# violation: spin must find an error (a negative control showing the model can fail); violation:TEXT:
# the error report must also contain TEXT (no spaces), so the counterexample is the intended one.
# Exit 77 (ctest: skipped) when spin or a C compiler is missing.
set -uo pipefail
model=$(readlink -f "$1"); shift
command -v spin >/dev/null || { echo "skipped: spin is not installed (apt-get install spin)"; exit 77; }
cc=${CC:-cc}
command -v "$cc" >/dev/null || { echo "skipped: no C compiler"; exit 77; }
runs=()
if [ $# -gt 0 ]; then runs=("$*"); else
  while IFS= read -r l; do runs+=("$l"); done < <(sed -n 's/^ *\* run: //p' "$model")
fi
[ ${#runs[@]} -gt 0 ] || { echo "FAILED: $model names no runs"; exit 1; }
fail=0
for r in "${runs[@]}"; do
  read -r expect defs <<<"$r"
  dir=$(mktemp -d)
  (
    cd "$dir" || exit 1
    # shellcheck disable=SC2086
    spin -a $defs "$model" >spin.log 2>&1 || { cat spin.log; exit 1; }
    "$cc" -O2 -DSAFETY -DCOLLAPSE -DMEMLIM=${SPIN_MEMLIM_MB:-2048} -w -o pan pan.c >cc.log 2>&1 || { cat cc.log; exit 1; }
    ./pan -m1000000 >pan.log 2>&1
    cat pan.log
  ) >"$dir/out" 2>&1
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$dir/out" | tail -1)
  states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$dir/out" | tail -1)
  incomplete=$(grep -c "Search not completed\|max search depth too small" "$dir/out")
  ok=1
  case $expect in
    ok) [ "${errors:-x}" = 0 ] && [ "$incomplete" -eq 0 ] || ok=0 ;;
    violation) [ -n "$errors" ] && [ "$errors" -gt 0 ] || ok=0 ;;
    violation:*) # the counterexample must be the intended one: pan's report names TEXT
      [ -n "$errors" ] && [ "$errors" -gt 0 ] && grep -qF -- "${expect#violation:}" "$dir/out" || ok=0 ;;
    *) echo "bad expectation '$expect'"; ok=0 ;;
  esac
  if [ $ok -eq 1 ]; then
    echo "ok: $(basename "$model") $defs: expected $expect, errors ${errors:-?}, states ${states:-?}"
  else
    echo "FAILED: $(basename "$model") $defs: expected $expect, errors ${errors:-?}, incomplete $incomplete"
    tail -n 40 "$dir/out"; fail=1
  fi
  rm -rf "$dir"
done
exit $fail
