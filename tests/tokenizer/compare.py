#!/usr/bin/env python3
"""Goal: our WordPiece ids equal Hugging Face `tokenizers`' on every line of the corpus.
Method: the corpus (gen_corpus.py, seeded) is encoded by `tokenizers` from the model's
tokenizer.json (padding off; truncation off, then at each MAX_LEN) and by our
tokenizer_encode_lines from tokenizer.json and from vocab.txt; any difference prints the line
number, the line (repr) and both id lists, and fails.
Usage: compare.py ENCODE_LINES MODEL_DIR CORPUS [MAX_LEN...]
With --fixture OUT N: instead writes the first N lines and their HF ids (no truncation) to OUT
(corpus.txt and ids.txt) for the offline test.
"""
import os
import subprocess
import sys

from tokenizers import Tokenizer


def hf_ids(model_dir, lines, max_len):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    if max_len:
        tok.enable_truncation(max_len)
    else:
        tok.no_truncation()
    return [e.ids for e in tok.encode_batch(lines)]


def ours(encode_lines, path, corpus, max_len):
    with open(corpus, "rb") as f:
        out = subprocess.run([encode_lines, path, str(max_len)], stdin=f, capture_output=True, check=True)
    return [[int(x) for x in l.split()] if not l.startswith(b"error") else l.decode()
            for l in out.stdout.split(b"\n")[:-1]]


def main():
    if sys.argv[1] == "--fixture":
        out, n, model_dir, corpus = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        raw = open(corpus, "rb").read().split(b"\n")[:n]
        ids = hf_ids(model_dir, [l.decode("utf-8") for l in raw], 0)
        open(os.path.join(out, "corpus.txt"), "wb").write(b"".join(l + b"\n" for l in raw))
        open(os.path.join(out, "ids.txt"), "w").write("".join(" ".join(map(str, i)) + "\n" for i in ids))
        return 0
    encode_lines, model_dir, corpus = sys.argv[1:4]
    max_lens = [int(x) for x in sys.argv[4:]] or [0]
    raw = open(corpus, "rb").read().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = [l.decode("utf-8") for l in raw]
    bad = 0
    for max_len in max_lens:
        ref = hf_ids(model_dir, lines, max_len)
        for src in ("tokenizer.json", "vocab.txt"):
            got = ours(encode_lines, os.path.join(model_dir, src), corpus, max_len)
            if len(got) != len(ref):
                print(f"FAIL {src} max_len {max_len}: {len(got)} lines of ids for {len(ref)} lines")
                return 1
            diff = [i for i in range(len(ref)) if got[i] != ref[i]]
            for i in diff[:10]:
                print(f"FAIL {src} max_len {max_len} line {i + 1}: {lines[i][:300]!r}\n  HF:   {ref[i][:80]}\n  ours: {got[i] if isinstance(got[i], str) else got[i][:80]}")
            bad += len(diff)
            print(f"{src} max_len {max_len}: {len(ref) - len(diff)} of {len(ref)} lines equal to HF "
                  f"({sum(len(r) for r in ref)} ids)")
    print("tokenizer vs Hugging Face:", "OK" if not bad else f"FAILED ({bad} lines differ)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
