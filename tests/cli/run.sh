#!/usr/bin/env bash
# Goal: `streampool run` works end to end on the host backend: a short run exits 0 and prints the
# scaling table, the allocator line and an OK result; --json is one parseable document with
# "ok": true and a row per thread count; batcher mode answers correctly; bad options and bad model
# files exit non-zero with a message naming the problem.
# Method: run the CLI ($1) with tiny durations and check its output and exit codes.
. "$(dirname "$0")/../common/cli.sh" "$1"

"$cli" run --backend host --duration 0.3 --threads 1,2 --no-progress >"$tmp/table" 2>"$tmp/err"
rc=$?
cat "$tmp/table"
check "short run exits 0 (got $rc)" $rc
grep -q "requests/s.*samples/s.*p50 us.*p99 us.*speedup.*max err" "$tmp/table"; check "table header" $?
grep -Eq "^ +1 +[0-9.]+ +[0-9.]+ " "$tmp/table"; check "row for 1 thread" $?
grep -Eq "^ +2 +[0-9.]+ +[0-9.]+ " "$tmp/table"; check "row for 2 threads" $?
grep -q "^memory: allocated" "$tmp/table"; check "allocator stats" $?
grep -q "^result: OK" "$tmp/table"; check "result OK" $?

"$cli" run --backend host --duration 0.2 --threads 1,3 --dtype bf16 --batch 3 --json >"$tmp/json"
rc=$?
check "--json exits 0 (got $rc)" $rc
if command -v python3 >/dev/null; then
  python3 - "$tmp/json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True, d
assert [r["threads"] for r in d["runs"]] == [1, 3], d["runs"]
assert all(r["requests"] > 0 and r["wrong"] == 0 for r in d["runs"]), d["runs"]
assert d["dtype"] == "bf16" and d["batch"] == 3
PY
  check "--json parses and says ok" $?
else
  grep -q '"ok":[[:space:]]*true' "$tmp/json"; check "--json says ok" $?
fi

"$cli" run --backend host --duration 0.3 --batcher --clients 8 --max-delay-us 300 --no-progress \
  >"$tmp/batcher" 2>&1
rc=$?
cat "$tmp/batcher"
check "batcher run exits 0 (got $rc)" $rc
grep -q "rows/batch" "$tmp/batcher"; check "batcher column" $?

"$cli" run --bogus-option >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 2 ]; check "unknown option exits 2 (got $rc)" $?
grep -q "unknown option.*--bogus-option" "$tmp/bad"; check "unknown option is named" $?

"$cli" run --threads 1,x >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 2 ]; check "bad --threads exits 2 (got $rc)" $?
grep -q "bad value '1,x' for --threads" "$tmp/bad"; check "bad value is named" $?

printf 'abc' >"$tmp/short.safetensors"
"$cli" run --backend host --model "$tmp/short.safetensors" --duration 0.1 >"$tmp/bad" 2>&1
rc=$?; [ $rc -ne 0 ]; check "truncated model file exits non-zero (got $rc)" $?
grep -q "too short" "$tmp/bad"; check "truncated model file message" $?

# The check must be able to fail: one corrupted output makes the run exit 1 and say so.
"$cli" run --backend host --duration 0.2 --threads 1 --no-progress --self-test-wrong-output \
  >"$tmp/wrong" 2>&1
rc=$?; [ $rc -eq 1 ]; check "a wrong output exits 1 (got $rc)" $?
grep -q "WRONG outputs" "$tmp/wrong" && grep -q "^result: FAILED" "$tmp/wrong"
check "a wrong output is reported" $?

exit $fail
