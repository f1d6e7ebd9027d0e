#!/usr/bin/env bash
# Goal: the tokenizer gives Hugging Face's ids without the network.
# Method: the checked-in fixture (tests/tokenizer/fixture/: all-MiniLM-L6-v2's vocab.txt, the
# first 400 corpus lines and the ids `tokenizers` gave them from its tokenizer.json, written by
# `compare.py --fixture`) is encoded by tokenizer_encode_lines; any differing line fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)/fixture
got=$("$1" "$here/vocab.txt" 0 < "$here/corpus.txt") || { echo "FAIL: encode_lines exited $?"; exit 1; }
n=$(wc -l < "$here/ids.txt")
d=$(diff <(printf '%s\n' "$got") "$here/ids.txt" | grep -c '^>')
if [ "$d" -ne 0 ]; then
  diff <(printf '%s\n' "$got") "$here/ids.txt" | head -20
  echo "FAIL: $d of $n fixture lines differ from Hugging Face"; exit 1
fi
echo "fixture: $n of $n lines equal to Hugging Face; 1 passed, 0 failed"
