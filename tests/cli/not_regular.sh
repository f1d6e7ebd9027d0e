#!/usr/bin/env bash
# Goal (issue 14 H4/U1): `streampool run --model` and `streampool check --model/--inputs` refuse a
# directory and a FIFO with no writer at once, naming the problem ("is a directory", "is not a
# regular file"), instead of hanging on the FIFO or reporting a huge host allocation.
# Method: run the CLI ($1) on a temporary directory and FIFO, each under `timeout 20` (a hang
# exits 124 and fails the case), and check exit codes and messages.
. "$(dirname "$0")/../common/cli.sh" "$1"

mkdir "$tmp/dir"
mkfifo "$tmp/fifo"
printf '\0\0\200\077' >"$tmp/one.f32"

for what in dir fifo; do
  want="is not a regular file"; [ $what = dir ] && want="is a directory"
  timeout 20 "$cli" run --backend host --duration 0.1 --threads 1 --no-progress \
    --model "$tmp/$what" >"$tmp/out" 2>&1
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ]; check "run --model $what fails at once (got $rc)" $?
  grep -q "$want" "$tmp/out"; check "run --model $what: '$want'" $?

  timeout 20 "$cli" check --backend host --model "$tmp/$what" --inputs "$tmp/one.f32" \
    --expect "$tmp/one.f32" >"$tmp/out" 2>&1
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ]; check "check --model $what fails at once (got $rc)" $?
  grep -q "$want" "$tmp/out"; check "check --model $what: '$want'" $?

  timeout 20 "$cli" check --backend host --model "$tmp/$what" --inputs "$tmp/$what" \
    --expect "$tmp/one.f32" >"$tmp/out" 2>&1
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ]; check "check --inputs $what fails at once (got $rc)" $?
  grep -q "$want" "$tmp/out"; check "check --inputs $what: '$want'" $?
done
exit $fail
