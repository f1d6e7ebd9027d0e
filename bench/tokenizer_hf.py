#!/usr/bin/env python3
"""Hugging Face `tokenizers` side of bench/tokenizer: prints table rows in its format.
Usage: tokenizer_hf.py TOKENIZER_PATH CORPUS MAX_LEN PASSES THREADS (TOKENIZER_PATH:
tokenizer.json, vocab.txt or a folder, loaded as bench/tokenizer loads it; MAX_LEN 0: no
truncation). THREADS is encode_batch's pool size, which the caller also sets in RAYON_NUM_THREADS
(read once per process); THREADS 1 also measures encode, one line a call."""
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
    path, corpus, max_len, passes, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    lines = [l.decode("utf-8") for l in open(corpus, "rb").read().split(b"\n")[:-1]]
    passes = max(1, passes // 8)
    tok = load(path)
    tok.no_padding()
    if max_len:
        tok.enable_truncation(max_len)
    else:
        tok.no_truncation()
    for name in (["encode, one line a call"] if threads == 1 else []) + ["encode_batch"]:
        t0, ids = time.perf_counter(), 0
        for _ in range(passes):
            if name == "encode_batch":
                ids += sum(len(e.ids) for e in tok.encode_batch(lines))
            else:
                for l in lines:
                    ids += len(tok.encode(l).ids)
        dt = time.perf_counter() - t0
        print(f"| Hugging Face tokenizers {name} | {max_len or 'none'} | {threads} | "
              f"{len(lines) * passes / dt / 1e3:.1f} k | {ids / dt / 1e6:.3f} M |", flush=True)


if __name__ == "__main__":
    main()
