#!/usr/bin/env bash
# Goal: `streampool run --devices` spreads threads over several devices and reports each device
# and the total: with STREAMPOOL_HOST_DEVICES=2, `--devices all` runs on devices 0 and 1, exits 0
# with correct outputs, prints a line per device and a total line whose thread counts add up, and
# memory per device; --json has per-device rows whose requests add up to the total; a repeated or
# malformed index is bad usage (exit 2) and a missing device fails (exit 1); `--devices all` on a
# backend whose devices cannot be counted (a bad STREAMPOOL_HOST_DEVICES) fails cleanly (exit 2,
# a bad setting, with the reason), not with a crash.
# Method: run the CLI ($1) with tiny durations and check its output and exit codes.
. "$(dirname "$0")/../common/cli.sh" "$1"
export STREAMPOOL_HOST_DEVICES=2

"$cli" run --backend host --devices all --threads 2,3 --duration 0.3 --no-progress \
  >"$tmp/table" 2>"$tmp/err"
rc=$?
cat "$tmp/table" "$tmp/err"
check "--devices all exits 0 (got $rc)" $rc
grep -q "^streampool run: 2 devices" "$tmp/table"; check "header names 2 devices" $?
grep -Eq "^ *device +threads +requests/s" "$tmp/table"; check "device column" $?
grep -Eq "^ +0 +1 +[0-9.]+ " "$tmp/table"; check "device 0 row, 1 of 2 threads" $?
grep -Eq "^ +1 +1 +[0-9.]+ " "$tmp/table"; check "device 1 row, 1 of 2 threads" $?
grep -Eq "^ +total +2 +[0-9.]+ " "$tmp/table"; check "total row, 2 threads" $?
grep -Eq "^ +0 +2 +[0-9.]+ " "$tmp/table"; check "device 0 row, 2 of 3 threads" $?
grep -Eq "^ +total +3 +[0-9.]+ " "$tmp/table"; check "total row, 3 threads" $?
grep -q "^memory (device 0)" "$tmp/table" && grep -q "^memory (device 1)" "$tmp/table"
check "memory per device" $?
grep -q "^result: OK" "$tmp/table"; check "result OK" $?

"$cli" run --backend host --devices 0,1 --threads 4 --duration 0.2 --json >"$tmp/json"
rc=$?
check "--devices 0,1 --json exits 0 (got $rc)" $rc
if command -v python3 >/dev/null; then
  python3 - "$tmp/json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True, d
assert [x["index"] for x in d["devices"]] == [0, 1], d["devices"]
run = d["runs"][0]
per = run["devices"]
assert [x["device"] for x in per] == [0, 1], per
assert [x["threads"] for x in per] == [2, 2], per
assert all(x["requests"] > 0 and x["wrong"] == 0 for x in per), per
assert sum(x["requests"] for x in per) == run["requests"], (per, run)
PY
  check "--json per-device rows add up to the total" $?
else
  grep -q '"ok":[[:space:]]*true' "$tmp/json"; check "--json says ok" $?
fi

"$cli" run --backend host --devices 0,0 >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 2 ]; check "repeated index exits 2 (got $rc)" $?
grep -q "bad value '0,0' for --devices" "$tmp/bad"; check "bad --devices is named" $?
"$cli" run --backend host --devices 0,x >/dev/null 2>&1
rc=$?; [ $rc -eq 2 ]; check "malformed list exits 2 (got $rc)" $?
"$cli" run --backend host --devices 0,5 --duration 0.1 >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 1 ]; check "missing device exits 1 (got $rc)" $?
grep -q "no such device" "$tmp/bad"; check "missing device is named" $?
STREAMPOOL_HOST_DEVICES=bad "$cli" run --backend host --devices all --duration 0.1 \
  --no-progress >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 2 ]; check "--devices all with uncountable devices exits 2 (got $rc)" $?
grep -q "STREAMPOOL_HOST_DEVICES" "$tmp/bad"; check "the bad device count is named" $?
exit $fail
