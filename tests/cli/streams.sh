#!/usr/bin/env bash
# Goal: `streampool streams` checks copies on many threads and exits 0 only when every thread ran
# and every copy came back right: a short run passes; a thread that cannot even be created counts
# as a failure (exit 1, the thread's line says why) instead of a silent 0-round, 0-error line.
# Method: run the CLI ($1) with tiny durations; for the second part cap the address space
# (ulimit -v) so that most of 1024 thread stacks cannot be mapped. Not checked when the
# binary cannot start under the cap (sanitizer builds reserve huge address ranges).
. "$(dirname "$0")/../common/cli.sh" "$1"

"$cli" streams --backend host --threads 3 --seconds 0.1 --bytes 4096 >"$tmp/ok" 2>&1
rc=$?
cat "$tmp/ok"
check "short run exits 0 (got $rc)" $rc
grep -q "errors: 0" "$tmp/ok"; check "no errors" $?

(ulimit -v 600000; "$cli" streams --backend host --threads 1024 --seconds 0.05 --bytes 512) \
  >"$tmp/capped" 2>&1
rc=$?
if grep -q "^device host" "$tmp/capped"; then
  [ $rc -eq 1 ]; check "threads that could not start fail the run (got $rc)" $?
  grep -q "thread could not start" "$tmp/capped"; check "the unstarted thread says why" $?
else
  echo "not checked (the CLI does not start under ulimit -v) (rc $rc): $(head -c 200 "$tmp/capped")"
fi
exit $fail
