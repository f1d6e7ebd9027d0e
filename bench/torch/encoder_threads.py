#!/usr/bin/env python3
"""PyTorch peer of bench/encoder: the same encoder folder (all-MiniLM-L6-v2's weights) as
transformers' BertModel plus mean pooling and L2 normalize (what sentence-transformers runs for
it), on the same sentences (--inputs: the file bench/encoder --write-sentences wrote).

Rows, as bench/encoder prints them: T Python threads each with its own torch.cuda.Stream
embedding one sentence a call (batch 1); one thread batched at 32 and 256; f32 (TF32 off; a bf16
folder is cast up) and bf16. A call is what ours is: tokenize (the folder's fast tokenizer), copy
in, forward, pool, normalize, copy the embeddings back to the host and synchronize the stream.
Every embedding is compared with the thread-free batch-1 embedding of the same sentence (relative
max error per row, the "max err" column). One JSON line per row follows (prefix "json ").
usage: encoder_threads.py --model DIR --inputs FILE [--threads 1,2,4,8,16] [--batches 32,256]
                          [--duration 2] [--dtypes f32,bf16] [--device cuda|cpu]
"""
import argparse
import contextlib
import json
import threading
import time

import torch
from transformers import AutoTokenizer, BertModel


class Embedder:
    def __init__(self, folder, dtype, device):
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.model = BertModel.from_pretrained(folder).eval().to(device, dtype)
        self.device = device
        self.max_len = min(256, self.model.config.max_position_embeddings)
        try:  # sentence-transformers' max_seq_length, as our loader reads it
            with open(folder + "/sentence_bert_config.json") as f:
                self.max_len = json.load(f)["max_seq_length"]
        except (OSError, KeyError, ValueError):
            pass

    def __call__(self, texts):
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_len,
                       return_tensors="pt")
        ids = enc["input_ids"].to(self.device, non_blocking=True)
        mask = enc["attention_mask"].to(self.device, non_blocking=True)
        h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), p=2, dim=1).cpu()


def row_err(y, ref):
    """max |y - ref| / max |ref| per row, the largest over the rows."""
    scale = ref.abs().amax(1).clamp(min=1e-6)
    return float(((y - ref).abs().amax(1) / scale).max())


def worker(emb, texts, ref, batch, index, stop, start, out):
    stream = torch.cuda.Stream() if emb.device == "cuda" else None
    lat, err, r = [], 0.0, index * 13
    n = len(texts)
    ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        def call(r0):
            idx = [(r0 + j) % n for j in range(batch)]
            y = emb([texts[i] for i in idx])
            if stream is not None:
                stream.synchronize()
            return row_err(y, ref[idx])
        call(r)
        call(r)
        start.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            e = call(r)
            lat.append(time.perf_counter() - t0)
            err = max(err, e)
            r += batch
    out.append((lat, err))


def run(emb, texts, ref, threads, batch, duration):
    stop, start, out = threading.Event(), threading.Barrier(threads + 1), []
    ts = [threading.Thread(target=worker, args=(emb, texts, ref, batch, i, stop, start, out))
          for i in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(duration)
    stop.set()
    secs = time.perf_counter() - t0
    for t in ts:
        t.join()
    lat = sorted(v for ls, _ in out for v in ls)
    n = len(lat)
    err = max((e for _, e in out), default=0.0)
    p50 = lat[n // 2] * 1e6 if n else 0
    p99 = lat[min(n - 1, int(n * 0.99))] * 1e6 if n else 0
    return n * batch / secs, p50, p99, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--batches", default="32,256")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(a.inputs) as f:
        texts = [line.rstrip("\r\n") for line in f]
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print("torch %s on %s, %s (BertModel + mean pooling + normalize), %d sentences (%s), "
          "%.1f s per row" % (torch.__version__, name, a.model, len(texts), a.inputs, a.duration))
    print("%-5s %-8s %7s %6s %13s %9s %9s %9s" % ("dtype", "mode", "threads", "batch",
                                                  "sentences/s", "p50 us", "p99 us", "max err"))
    for dn in a.dtypes.split(","):
        dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dn]
        emb = Embedder(a.model, dtype, a.device)
        with torch.inference_mode():
            ref = torch.cat([emb([t]) for t in texts])
        rows = [("threads", int(t), 1) for t in a.threads.split(",")]
        rows += [("batched", 1, int(b)) for b in a.batches.split(",")]
        for mode, threads, batch in rows:
            rate, p50, p99, err = run(emb, texts, ref, threads, batch, a.duration)
            print("%-5s %-8s %7d %6d %13.0f %9.1f %9.1f %9.1e" %
                  (dn, mode, threads, batch, rate, p50, p99, err), flush=True)
            print("json " + json.dumps({"impl": "torch-python", "dtype": dn, "mode": mode,
                                        "threads": threads, "batch": batch,
                                        "sentences_per_s": rate, "p50_us": p50, "p99_us": p99,
                                        "max_err": err}), flush=True)


if __name__ == "__main__":
    main()
