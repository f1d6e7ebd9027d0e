#!/usr/bin/env python3
"""PyTorch baseline for bench/infer: the 512-1024-1024-512 MLP at batch 1, T Python threads, each
with its own torch.cuda.Stream, y = model(x) then stream.synchronize(), f32 (TF32 off) and bf16.
Prints forwards/s and p50/p99 latency per thread count, and one JSON line per row (prefix "json ").
usage: torch_mlp.py [--threads 1,2,4,8,16] [--duration 2] [--dtypes f32,bf16]
"""
import argparse
import json
import threading
import time

import torch


def build(dtype):
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                            torch.nn.ReLU(), torch.nn.Linear(1024, 512))
    return m.eval().to("cuda", dtype)


def worker(model, dtype, stop, start, out):
    stream = torch.cuda.Stream()
    lat = []
    with torch.inference_mode(), torch.cuda.stream(stream):
        x = torch.rand(1, 512, device="cuda", dtype=dtype)
        for _ in range(3):
            model(x)
        stream.synchronize()
        start.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            model(x)
            stream.synchronize()
            lat.append(time.perf_counter() - t0)
    out.append(lat)


def run(model, dtype, threads, duration):
    stop, start, out = threading.Event(), threading.Barrier(threads + 1), []
    ts = [threading.Thread(target=worker, args=(model, dtype, stop, start, out)) for _ in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(duration)
    stop.set()
    secs = time.perf_counter() - t0
    for t in ts:
        t.join()
    lat = sorted(l for ls in out for l in ls)
    n = len(lat)
    return n / secs, lat[n // 2] * 1e6 if n else 0, lat[min(n - 1, int(n * 0.99))] * 1e6 if n else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--dtypes", default="f32,bf16")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print("torch %s on %s, MLP 512-1024-1024-512, batch 1, %.1f s per row" %
          (torch.__version__, torch.cuda.get_device_name(), a.duration))
    print("%-14s %7s %12s %9s %9s" % ("mode", "threads", "forwards/s", "p50 us", "p99 us"))
    for name in a.dtypes.split(","):
        dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[name]
        model = build(dtype)
        for t in [int(v) for v in a.threads.split(",")]:
            rate, p50, p99 = run(model, dtype, t, a.duration)
            print("%-14s %7d %12.0f %9.1f %9.1f" % ("torch " + name, t, rate, p50, p99), flush=True)
            print("json " + json.dumps({"impl": "torch-python", "dtype": name, "threads": t,
                                        "forwards_per_s": rate, "p50_us": p50, "p99_us": p99}))


if __name__ == "__main__":
    main()
