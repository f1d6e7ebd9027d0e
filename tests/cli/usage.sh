#!/usr/bin/env bash
# Goal: every command of the CLI parses with one strict grammar and names every rejection:
# a bad value or an unknown flag is a usage error (exit 2, the flag and the value named on
# stderr, nothing on stdout); --help prints the usage on stdout and exits 0; lists refuse empty
# items ("1,,2", "2,") and spaces (" 2"); a --seed past 64 bits is refused, not clamped; --tol
# refuses "-1" and "abc"; an unknown --backend or --dtype is named; every command that prints
# results has --json; run and check default to the same tolerance (one error metric).
# Method: run the CLI ($1) with each bad input (short durations, so that a command which wrongly
# accepts its input still ends quickly) and check the exit code, stdout and stderr. check's
# --json runs on a one-layer model written here with python3's standard library (skipped with a
# line when python3 is missing).
. "$(dirname "$0")/../common/cli.sh" "$1"

# usage_error NAME FLAG VALUE ARGS...: exit 2, stderr names --FLAG and 'VALUE', stdout empty.
usage_error() {
  local name=$1 flag=$2 value=$3
  shift 3
  "$cli" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [ $rc -eq 2 ] && grep -q -- "$flag" "$tmp/err" && grep -qF -- "'$value'" "$tmp/err" &&
    [ ! -s "$tmp/out" ]
  local ok=$?
  [ $ok -eq 0 ] || echo "  rc $rc, stderr: $(head -c 300 "$tmp/err"), stdout: $(head -c 200 "$tmp/out")"
  check "$name: exit 2 naming $flag '$value'" $ok
}

quick=(--backend host --duration 0.05 --no-progress)
usage_error "run --threads 1,,2" --threads "1,,2" run "${quick[@]}" --threads 1,,2
usage_error "run --threads 2," --threads "2," run "${quick[@]}" --threads 2,
usage_error "run --threads ' 2'" --threads " 2" run "${quick[@]}" --threads " 2"
usage_error "run --threads +2" --threads "+2" run "${quick[@]}" --threads +2
usage_error "run huge --seed" --seed "99999999999999999999" run "${quick[@]}" --threads 1 \
  --seed 99999999999999999999
usage_error "run --duration abc" --duration "abc" run "${quick[@]}" --duration abc
usage_error "run --backend bogus" --backend "bogus" run --duration 0.05 --backend bogus
usage_error "run --devices 0,0" --devices "0,0" run "${quick[@]}" --devices 0,0
io=(--model "$tmp/none.safetensors" --inputs "$tmp/none.in" --expect "$tmp/none.out")
usage_error "check --tol -1" --tol "-1" check "${io[@]}" --tol -1
usage_error "check --tol abc" --tol "abc" check "${io[@]}" --tol abc
usage_error "check --dtype f64" --dtype "f64" check "${io[@]}" --dtype f64
usage_error "check --batch 0" --batch "0" check "${io[@]}" --batch 0
usage_error "info --backend bogus" --backend "bogus" info --backend bogus
usage_error "streams --threads 2," --threads "2," streams --threads 2, --seconds 0.05
usage_error "streams --bytes 1x" --bytes "1x" streams --bytes 1x --seconds 0.05
usage_error "streams --seconds -1" --seconds "-1" streams --seconds -1

for cmd in run check info streams; do
  "$cli" $cmd --no-such-flag >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 2 ] && grep -q -- "unknown option '--no-such-flag'" "$tmp/err" && [ ! -s "$tmp/out" ]
  check "$cmd --no-such-flag: exit 2 naming it (rc $rc: $(head -n 1 "$tmp/err"))" $?
  "$cli" $cmd --backend >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 2 ] && grep -q -- "'--backend' needs a value" "$tmp/err"
  check "$cmd --backend without a value: exit 2 naming it (rc $rc)" $?
  "$cli" $cmd --help >"$tmp/out" 2>"$tmp/err"
  rc=$?
  [ $rc -eq 0 ] && grep -q "^usage: streampool $cmd" "$tmp/out" && [ ! -s "$tmp/err" ]
  check "$cmd --help: usage on stdout, exit 0 (rc $rc)" $?
done

# Sizes take the library's grammar (K/M/G/T, optional B or iB).
"$cli" streams --backend host --threads 1 --seconds 0.05 --bytes 4KiB >"$tmp/out" 2>&1
rc=$?; [ $rc -eq 0 ] && grep -q "4096-byte blocks" "$tmp/out"; check "streams --bytes 4KiB (rc $rc)" $?

# --json on every command that prints results (run's own test covers run --json in depth).
json_ok() { # file: one JSON document with "ok": true
  if command -v python3 >/dev/null; then
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d.get("ok", True) is True else 1)' "$1"
  else
    grep -q '[{]' "$1"
  fi
}
"$cli" info --json --backend host >"$tmp/info.json"; rc=$?
[ $rc -eq 0 ] && json_ok "$tmp/info.json"; check "info --json (rc $rc)" $?
"$cli" streams --json --backend host --threads 2 --seconds 0.05 >"$tmp/streams.json"; rc=$?
[ $rc -eq 0 ] && json_ok "$tmp/streams.json"; check "streams --json (rc $rc)" $?

if ! command -v python3 >/dev/null; then
  echo "not checked (no python3): check --json, one tolerance for run and check"
  exit $fail
fi
# A one-layer model y = W x + b (3 -> 2) in safetensors, 4 input rows and their outputs.
python3 - "$tmp" <<'PY'
import json, struct, sys
d = sys.argv[1]
w = [[0.5, -0.25, 1.0], [0.125, 0.75, -0.5]]
b = [0.1, -0.2]
data = struct.pack("<6f", *[v for row in w for v in row]) + struct.pack("<2f", *b)
hdr = json.dumps({"__metadata__": {"streampool.arch": "0:linear"},
                  "0.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                  "0.bias": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}}).encode()
open(d + "/lin.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)
xs = [[1, 2, 3], [-1, 0.5, 2], [0, 0, 0], [3, -2, 1]]
open(d + "/lin.in", "wb").write(b"".join(struct.pack("<3f", *x) for x in xs))
ys = [[sum(w[o][i] * x[i] for i in range(3)) + b[o] for o in range(2)] for x in xs]
open(d + "/lin.out", "wb").write(b"".join(struct.pack("<2f", *y) for y in ys))
PY
lin=(--backend host --model "$tmp/lin.safetensors" --inputs "$tmp/lin.in" --expect "$tmp/lin.out")
for dt in f32 bf16 f16; do
  "$cli" check "${lin[@]}" --dtype $dt --json >"$tmp/check.json"; rc=$?
  [ $rc -eq 0 ] && json_ok "$tmp/check.json"; check "check --json --dtype $dt (rc $rc)" $?
  "$cli" run --backend host --duration 0.05 --threads 1 --dtype $dt --json >"$tmp/run.json"
  python3 - "$tmp/check.json" "$tmp/run.json" <<'PY'
import json, sys
c, r = (json.load(open(p)) for p in sys.argv[1:3])
print("check tolerance %g, run tolerance %g" % (c["tolerance"], r["tolerance"]))
sys.exit(0 if c["tolerance"] == r["tolerance"] else 1)
PY
  check "run and check default to one tolerance ($dt)" $?
done
"$cli" check "${lin[@]}" --tol 0 >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 0 ] || [ $rc -eq 1 ]; check "check --tol 0 is a valid tolerance (rc $rc)" $?
exit $fail
