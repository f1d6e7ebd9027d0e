#!/usr/bin/env python3
"""Hugging Face `tokenizers` side of bench/tokenizer: prints table rows in its format.
Usage: tokenizer_hf.py TOKENIZER_PATH CORPUS MAX_LEN PASSES (TOKENIZER_PATH: tokenizer.json,
vocab.txt or a folder, loaded as bench/tokenizer loads it)."""
import os
import sys
import time


def load(path):
    from tokenizers import BertWordPieceTokenizer, Tokenizer
    if os.path.isdir(path):
        j = os.path.join(path, "tokenizer.json")
        path = j if os.path.exists(j) else os.path.join(path, "vocab.txt")
    tok = Tokenizer.from_file(path) if path.endswith(".json") else BertWordPieceTokenizer(path)
    return tok


def main():
    path, corpus, max_len, passes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    lines = [l.decode("utf-8") for l in open(corpus, "rb").read().split(b"\n")[:-1]]
    passes = max(1, passes // 4)
    rows = []
    for name, threads in (("encode, one line a call", 1), ("encode_batch", 1), ("encode_batch", 4)):
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        tok = load(path)
        tok.no_padding()
        tok.enable_truncation(max_len)
        t0, ids = time.perf_counter(), 0
        for _ in range(passes):
            if name.startswith("encode,"):
                for l in lines:
                    ids += len(tok.encode(l).ids)
            else:
                ids += sum(len(e.ids) for e in tok.encode_batch(lines))
        dt = time.perf_counter() - t0
        rows.append(f"| Hugging Face tokenizers {name} | {threads} | {len(lines) * passes / dt / 1e3:.0f} k "
                    f"| {ids / dt / 1e6:.2f} M |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
