#!/usr/bin/env python3
"""A load generator for a streampool.serve app: client threads sending requests over HTTP (one
keep-alive connection per thread) or through a Serve handle, for a fixed time; prints rows/s,
requests/s, p50 and p99 latency, errors, and (with --check FILE, the app's safetensors weights)
answers that differ from the float64 NumPy reference of those weights.

usage: loadgen.py [--url http://127.0.0.1:8000/sp] [--threads 32] [--rows 1] [--duration 10]
                  [--check mlp.safetensors]

run_load() is also what bench/serve_bench.py calls (with a handle or a URL).
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional

import numpy as np


class HttpClient:
    """POST {"x": rows} to url over one keep-alive connection; returns the answer rows."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path or "/"
        self.timeout, self.conn = timeout, None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request("POST", self.path, body=json.dumps({"x": x.tolist()}),
                              headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
            body = r.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
        return np.asarray(json.loads(body)["y"], dtype=np.float32)


def run_load(make_call: Callable[[], Callable[[np.ndarray], Any]], in_features: int,
             threads: int = 32, rows: int = 1, duration: float = 10.0, warmup: float = 1.0,
             check: Optional[Callable[[np.ndarray, np.ndarray], bool]] = None,
             check_first: Optional[int] = None) -> Dict[str, Any]:
    """`threads` threads, each with make_call()'s client, sending [rows, in_features] requests
    for warmup + duration seconds; only the last `duration` counts. check(x, y) tests every
    answer, in the loop (its cost is the client's); with check_first=N each thread's first N
    answers are kept and checked after the run instead. Returns rows_s, requests_s, p50_ms,
    p99_ms, errors, wrong, requests, checked."""
    lat: List[List[float]] = [[] for _ in range(threads)]
    errors, wrong, checked = [0] * threads, [0] * threads, [0] * threads
    kept: List[List[Any]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    state = {"t0": 0.0, "t1": 0.0}

    def body(i: int) -> None:
        call = make_call()
        x = np.random.default_rng(i).standard_normal((rows, in_features), dtype=np.float32)
        barrier.wait()
        while True:
            t = time.perf_counter()
            if t >= state["t1"]:
                return
            try:
                y = np.asarray(call(x))
            except Exception:  # noqa: BLE001 - counted, the load goes on
                errors[i] += 1
                continue
            done = time.perf_counter()
            if check is not None and check_first is None:
                checked[i] += 1
                wrong[i] += not check(x, y)
            elif check is not None and len(kept[i]) < check_first:
                kept[i].append((x, y))
            if t >= state["t0"]:
                lat[i].append(done - t)

    ts = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    now = time.perf_counter()
    state["t0"], state["t1"] = now + warmup, now + warmup + duration
    barrier.wait()
    for t in ts:
        t.join(duration + warmup + 120)
    for i in range(threads):
        for x, y in kept[i]:
            checked[i] += 1
            wrong[i] += not check(x, y)
    all_lat = np.array([v for li in lat for v in li])
    n = len(all_lat)
    return {"requests": n, "rows_s": n * rows / duration, "requests_s": n / duration,
            "p50_ms": float(np.percentile(all_lat, 50) * 1e3) if n else float("nan"),
            "p99_ms": float(np.percentile(all_lat, 99) * 1e3) if n else float("nan"),
            "errors": sum(errors), "wrong": sum(wrong), "checked": sum(checked)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000/sp")
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--check", metavar="FILE", help="the app's weights: check every answer")
    args = ap.parse_args()
    info = json.loads(urllib.request.urlopen(args.url, timeout=30).read())
    check = None
    if args.check:
        from weights import close_to_reference, read_layers
        layers = read_layers(args.check)
        check = lambda x, y: close_to_reference(layers, x, y)  # noqa: E731
    r = run_load(lambda: HttpClient(args.url), info["in_features"], args.threads, args.rows,
                 args.duration, check=check)
    print(f"{args.threads} threads, {args.rows} rows/request, {args.duration:g} s, {args.url}")
    print(f"{r['rows_s']:.0f} rows/s  {r['requests_s']:.0f} requests/s  p50 {r['p50_ms']:.2f} ms"
          f"  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}"
          + (f"  wrong answers {r['wrong']}" if check else ""))
    if r["errors"] or r["wrong"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
