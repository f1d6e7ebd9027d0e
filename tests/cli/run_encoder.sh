#!/usr/bin/env bash
# Goal: `streampool run --model DIR` with an encoder folder works end to end on the host backend:
# the rows for threads at batch 1, one thread batched and the batcher, each checked against the
# single-threaded embeddings and an OK result; --inputs FILE is read (an empty line too); a wrong
# embedding makes the run fail (exit 1); options that only fit MLPs, a missing --inputs file and
# a folder that is no encoder (no config.json: refused as a directory, as before) and an encoder
# folder without its weights are refused with a message.
# Method: the encoder helper's tiny BERT fixture (tests/fixtures/encoder/tiny_bert), tiny
# durations; check the output lines and exit codes.
. "$(dirname "$0")/../common/cli.sh" "$1"
model=$(cd "$(dirname "$0")/../fixtures/encoder/tiny_bert" && pwd)

"$cli" run --backend host --model "$model" --threads 1,2 --duration 0.2 --clients 8 --batch 4 \
  >"$tmp/table" 2>"$tmp/err"
rc=$?
cat "$tmp/table" "$tmp/err"
check "encoder run exits 0 (got $rc)" $rc
grep -q "sentences/s.*p50 us.*p99 us.*speedup.*max err.*texts/pass" "$tmp/table"; check "table header" $?
grep -Eq "^threads +1 +1 +[0-9.]+ " "$tmp/table"; check "row for 1 thread" $?
grep -Eq "^threads +2 +1 +[0-9.]+ " "$tmp/table"; check "row for 2 threads" $?
grep -Eq "^batched +1 +4 +[0-9.]+ " "$tmp/table"; check "batched row at --batch 4" $?
grep -Eq "^batcher +8 +1 +[0-9.]+ .* [0-9.]+$" "$tmp/table"; check "batcher row with texts/pass" $?
grep -q "sentences: 256 seeded, 32 tokens" "$tmp/table"; check "seeded sentences named" $?
grep -q "^result: OK" "$tmp/table"; check "result OK" $?

printf 'w1 w2 w3\n\nw4 unknownword w5\nw6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21 w22 w23 w24 w25 w26 w27 w28 w29 w30 w31 w32 w33 w34 w35 w36 w37\n' \
  >"$tmp/inputs.txt"
"$cli" run --backend host --model "$model" --inputs "$tmp/inputs.txt" --threads 1 --duration 0.1 \
  --clients 3 >"$tmp/inputs.out" 2>&1
rc=$?
check "--inputs run exits 0 (got $rc)" $rc
grep -q "sentences: 4 from $tmp/inputs.txt" "$tmp/inputs.out"; check "--inputs lines counted" $?

"$cli" run --backend host --model "$model" --threads 1 --duration 0.1 --clients 2 \
  --self-test-wrong-output >"$tmp/wrong" 2>&1
rc=$?; [ $rc -eq 1 ]; check "a wrong embedding exits 1 (got $rc)" $?
grep -q "WRONG outputs" "$tmp/wrong" && grep -q "^result: FAILED" "$tmp/wrong"; check "wrong is reported" $?

"$cli" run --backend host --model "$model" --json >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 2 ]; check "--json with an encoder folder exits 2 (got $rc)" $?
grep -q "not an encoder folder" "$tmp/bad"; check "--json refusal says why" $?

"$cli" run --backend host --inputs "$tmp/inputs.txt" --duration 0.1 >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 2 ]; check "--inputs without an encoder exits 2 (got $rc)" $?

"$cli" run --backend host --model "$model" --inputs "$tmp/missing.txt" --duration 0.1 >"$tmp/bad" 2>&1
rc=$?; [ $rc -eq 1 ]; check "a missing --inputs file exits 1 (got $rc)" $?
grep -q "cannot open --inputs" "$tmp/bad"; check "missing --inputs named" $?

mkdir -p "$tmp/empty"
"$cli" run --backend host --model "$tmp/empty" --duration 0.1 >"$tmp/bad" 2>&1
rc=$?; [ $rc -ne 0 ]; check "a folder without config.json exits non-zero (got $rc)" $?
grep -q "is a directory" "$tmp/bad"; check "a folder without config.json is refused as a directory" $?

cp -r "$model" "$tmp/broken" && rm "$tmp/broken/model.safetensors"
"$cli" run --backend host --model "$tmp/broken" --duration 0.1 >"$tmp/bad" 2>&1
rc=$?; [ $rc -ne 0 ]; check "an encoder folder without weights exits non-zero (got $rc)" $?
grep -q "model.safetensors" "$tmp/bad"; check "the missing model.safetensors is named" $?
exit $fail
