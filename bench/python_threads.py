#!/usr/bin/env python3
"""Python threads through the streampool package, beside PyTorch Python threads and our own C
threads, in one run, on the same weights (issue 10).

Rows (the 512-1024-1024-512 MLP at batch 1, f32, seeded PyTorch-style weights in a safetensors
file that every row loads):
  streampool model(x), T Python threads (1, 2, 4, 8, 16), each with its own exclusive stream:
      one C call per forward (host in, host out), the GIL released;
  streampool Batcher, 64 Python threads, one row per call;
  PyTorch, T Python threads (each with its own torch.cuda.Stream on CUDA; CPU tensors and one
      intra-op thread per call on the host backend), y = model(x) then sync; skipped with a
      line when torch is missing;
  C threads: `streampool run` (the CLI, same file, same thread counts, and --batcher with 64
      clients), skipped with a line when the CLI is not found;
  binding overhead: the time per call of a 4-4 model from a Python loop minus from a C loop on
      the same thread, device and stream (the extension's time_model_calls), in sets of short
      blocks (BLOCK_S each, back to back, the order reversed every other set; about 2 x
      --duration x --rounds seconds in all): C; C giving up the GIL per call; C also making an
      output array per call; the extension's model_call from Python; model(x) through the path
      the package uses; model(x) through ctypes. So the call time's drift falls on every side
      of a set, and the differences from C split the overhead; the median set, the quartiles
      and the range are printed. Where the extension is not built, C is the CLI (another
      process), in --rounds rounds (default ROUNDS). And a bare ctypes call.
Ratios: Python threads against C threads and against PyTorch at the same thread count.
The aims on the H200 (issue 10): at 16 threads >= 0.8 x C threads and >= 30 x PyTorch; the
binding adds <= 1 us per call.

usage: python_threads.py [--backend auto|host|cuda] [--threads 1,2,4,8,16] [--clients 64]
                         [--duration S] [--rounds N] [--cli PATH] [--json FILE]
The package is imported as installed, or from PYTHONPATH=python with STREAMPOOL_LIBRARY set to a
build's libstreampool.so (scripts/gpu-check.sh does that).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import streampool as sp

DIMS = [512, 1024, 1024, 512]
ROUNDS = 9  # default rounds of the binding-overhead measurement (on the H200 a 4-4 call's time
# drifts by 1-4 us between runs a few seconds apart, more than the overhead measured)
BLOCK_S = 0.02  # one block of calls in the measurement in sets (the extension's case)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples", "serve"))
from weights import write_layers  # noqa: E402  (seeded weights, the examples' and serve bench's)


def timed_threads(n: int, duration: float, setup, call) -> float:
    """Calls per second in total from n threads, each running call(state) for `duration`."""
    start, stop = threading.Barrier(n + 1), threading.Event()
    counts, errors = [0] * n, []

    def body(i: int) -> None:
        try:
            state = setup(i)
            for _ in range(3):
                call(state)
            start.wait()
            c = 0
            while not stop.is_set():
                call(state)
                c += 1
            counts[i] = c
        except BaseException as e:  # noqa: BLE001 - reported after the join
            errors.append(e)
            start.abort()

    ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for t in ts:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts) / secs


def ours(dev_args: dict, path: str, threads: list, clients: int, duration: float,
         layers: list) -> dict:
    res = {}
    # exclusive: a stream per thread; + the main thread and the batcher's workers
    with sp.Device(**dev_args, streams=min(128, max(threads) + 8), stream_mode="exclusive",
                   slot_wait_ms=5000) as dev:
        m = sp.Model.load(dev, path)
        x = np.random.default_rng(2).standard_normal((1, DIMS[0]), dtype=np.float32)
        ref = reference(layers, x)
        err = float(np.max(np.abs(m(x) - ref)) / np.max(np.abs(ref)))
        if err > 1e-4:
            raise SystemExit(f"python_threads: wrong output, relative error {err:.3g}")
        res["backend"], res["device"] = dev.backend, dev.info.name
        for t in threads:
            res[f"model_{t}"] = timed_threads(t, duration, lambda i: x, m)
        with sp.Batcher(m) as b:
            row = x[0]
            res[f"batcher_{clients}"] = timed_threads(clients, duration, lambda i: row, b)
        # A bare ctypes call, for scale.
        n = 200000
        idx = sp._lib.lib.sp_stream_index
        h = dev.current_stream()._h
        t0 = time.perf_counter()
        for _ in range(n):
            idx(h)
        res["ctypes_call_ns"] = (time.perf_counter() - t0) / n * 1e9
    return res


def reference(layers: list, x: np.ndarray) -> np.ndarray:
    a = x.astype(np.float64)
    for k, (w, b) in enumerate(layers):
        a = a @ w.astype(np.float64).T + b
        if k + 1 < len(layers):
            a = np.maximum(a, 0)
    return a


def pytorch(backend: str, layers: list, threads: list, duration: float):
    try:
        import torch
        torch.nn  # noqa: B018 - a stray "torch" folder on sys.path imports as a namespace
    except (ImportError, AttributeError):
        return None, "skipped: PyTorch rows (torch is not installed for this Python)"
    cuda = backend == "cuda"
    if cuda and not torch.cuda.is_available():
        return None, "skipped: PyTorch rows (torch has no CUDA here)"
    devn = "cuda" if cuda else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    mods = []
    for k, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin] + ([torch.nn.ReLU()] if k + 1 < len(layers) else [])
    model = torch.nn.Sequential(*mods).eval().to(devn)
    if not cuda:
        torch.set_num_threads(1)
    x_host = torch.rand(1, DIMS[0])

    def setup(i):
        return torch.cuda.Stream() if cuda else None

    def call(stream):
        with torch.inference_mode():
            if cuda:
                with torch.cuda.stream(stream):
                    model(x_host.to(devn, non_blocking=False)).cpu()
            else:
                model(x_host)

    res = {}
    for t in threads:
        res[f"model_{t}"] = timed_threads(t, duration, setup, call)
    return res, f"PyTorch {torch.__version__} on {devn}"


def run_cli(cli: str, backend: str, path: str, duration: float, args: list) -> list:
    """`streampool run` on the file: its JSON runs; RuntimeError with its message if it fails."""
    p = subprocess.run([cli, "run", "--backend", backend, "--model", path, "--duration",
                        str(duration), "--json", "--no-progress"] + args,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"streampool run failed: {p.stderr.strip()}")
    return json.loads(p.stdout)["runs"]


def c_threads(cli: str, backend: str, path: str, threads: list, clients: int, duration: float):
    if not cli:
        return None, "skipped: C-thread rows (no streampool CLI found; pass --cli PATH)"
    res = {}
    for args, key in ((["--threads", ",".join(map(str, threads))], "model"),
                      (["--batcher", "--clients", str(clients)], "batcher")):
        try:
            runs = run_cli(cli, backend, path, duration, args)
        except RuntimeError as e:
            return None, f"skipped: C-thread rows ({e})"
        for r in runs:
            res[f"{key}_{r['threads']}"] = r["requests_per_s"]
    return res, f"C threads: {cli} run"


def per_call_us(run, duration: float) -> float:
    """Microseconds per call of run(n) (which makes n calls and returns the seconds they took),
    n grown until one run takes >= duration."""
    n = 256
    while True:
        secs = run(n)
        if secs >= duration or n >= 1 << 30:
            return secs / n * 1e6
        n = int(n * min(64.0, max(2.0, 1.2 * duration / max(secs, 1e-9))))


def binding_overhead(dev_args: dict, tiny: str, cli: str, backend: str, duration: float,
                     rounds: int):
    """Microseconds per call of the 4-4 model: ({"python": [...], "c": [...], and where the
    package uses the extension "ctypes", "c_gil", "c_gil_array", "direct"}, how C was timed),
    or (None, why); entry k of every list is from the same set (or round). Python: model(x) in
    a loop on this thread. C, where the extension is built: the same sp_model_infer in a loop
    from C on this thread, device and stream (_speedups.time_model_calls; per_call 1 and 2 for
    the c_gil sides), in sets of short blocks (BLOCK_S each, back to back, the order reversed
    every other set), so that the call time's drift (several us between runs on CUDA) falls on
    every side of a set; else the CLI, another process, in --rounds rounds."""
    us = {"python": [], "c": []}
    ext = sp._speedups

    def python_loop(m, x):
        def run(n):
            t0 = time.perf_counter()
            for _ in range(n):
                m(x)
            return time.perf_counter() - t0
        return run

    def through_ctypes(run):
        with sp._ctypes_only():
            return run()

    with sp.Device(**dev_args) as dev:
        m = sp.Model.load(dev, tiny)
        x, y = np.ones((1, 4), np.float32), np.empty((1, 4), np.float32)
        if ext is None:
            for r in range(rounds):
                if r % 2 == 0:
                    us["python"].append(per_call_us(python_loop(m, x), duration))
                try:
                    runs = run_cli(cli, backend, tiny, duration, ["--threads", "1"])
                except RuntimeError as e:
                    return None, f"skipped: binding overhead ({e})"
                us["c"].append(1e6 / runs[0]["requests_per_s"])
                if r % 2 == 1:
                    us["python"].append(per_call_us(python_loop(m, x), duration))
            return us, f"C: {cli} run --threads 1 (another process), {rounds} rounds"

        py = python_loop(m, x)
        h, fi, fo = m._handle(), m.in_features, m.out_features

        def c_loop(n, per_call=0):
            return ext.time_model_calls(h, x, y, fi, fo, n, per_call)

        def direct(n):  # the extension's function called from Python, as Model._call calls it
            call = ext.model_call
            t0 = time.perf_counter()
            for _ in range(n):
                call(h, x, fi, fo)
            return time.perf_counter() - t0

        n = 64
        while c_loop(n) < BLOCK_S and n < 1 << 24:  # calls in one block (also the warm-up)
            n *= 2
        sides = [  # each side's seconds for n calls; "c" is the baseline
            ("c", c_loop),
            ("c_gil", lambda k: c_loop(k, 1)),
            ("c_gil_array", lambda k: c_loop(k, 2)),
            ("direct", direct),
            ("python", py),
            ("ctypes", lambda k: through_ctypes(lambda: py(k))),
        ]
        sets = max(1, int(2 * duration * rounds / (len(sides) * BLOCK_S)))
        for name, _ in sides:
            us.setdefault(name, [])
        for k in range(sets):
            for name, run in (sides if k % 2 == 0 else sides[::-1]):
                us[name].append(run(n) / n * 1e6)
    return us, (f"C: sp_model_infer in a loop on the same thread (_speedups.time_model_calls); "
                f"{sets} sets of blocks of {n} calls, each side once a set, the order "
                f"reversed every other set")


def find_cli(arg: str) -> str:
    if arg:
        return arg
    for c in (os.path.join(HERE, "..", "build", "streampool"), shutil.which("streampool")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--cli", default="")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.rounds < 1 or a.duration <= 0:
        ap.error("--rounds must be >= 1 and --duration > 0")
    threads = [int(t) for t in a.threads.split(",")]
    work = tempfile.mkdtemp(prefix="sp_python_threads_")
    path = os.path.join(work, "mlp.safetensors")
    layers = write_layers(path, DIMS, seed=1)
    tiny = os.path.join(work, "tiny.safetensors")
    write_layers(tiny, [4, 4], seed=1)
    dev_args = {"backend": a.backend}
    mine = ours(dev_args, path, threads, a.clients, a.duration, layers)
    backend = mine["backend"]
    cli = find_cli(a.cli)
    c_res, c_note = c_threads(cli, backend, path, threads, a.clients, a.duration)
    # Before PyTorch runs: its threads and its CUDA state are then not in this process yet.
    overhead, overhead_note = binding_overhead(dev_args, tiny, cli, backend, a.duration, a.rounds) \
        if c_res or sp.binding == "extension" else (None, None)
    torch_res, torch_note = pytorch(backend, layers, threads, a.duration)

    print(f"python_threads: MLP {'-'.join(map(str, DIMS))} f32 batch 1, {backend} "
          f"({mine['device']}), {a.duration:g} s per cell, Python {sys.version.split()[0]}, "
          f"streampool {sp.version()}, binding {sp.binding}")
    print(f"  {torch_note}")
    print(f"  {c_note}")
    hdr = f"{'':28} {'threads':>7} {'calls/s':>12} {'C threads':>12} {'py/C':>6} " \
          f"{'PyTorch':>12} {'py/torch':>9}"
    print(hdr)
    print("-" * len(hdr))

    def row(name, t, key):
        v = mine[key]
        c = c_res.get(key) if c_res else None
        p = torch_res.get(key) if torch_res else None
        num = lambda z: f"{z:12.0f}" if z else f"{'-':>12}"  # noqa: E731
        rat = lambda z, w: f"{z / w:{w_}.2f}" if z else f"{'-':>{w_}}"  # noqa: E731
        w_ = 6
        rc = rat(c and v, c) if c else f"{'-':>6}"
        w_ = 9
        rp = rat(p and v, p) if p else f"{'-':>9}"
        print(f"{name:28} {t:>7} {v:12.0f} {num(c)} {rc} {num(p)} {rp}")

    for t in threads:
        row("model(x), Python threads", t, f"model_{t}")
    row("Batcher, Python threads", a.clients, f"batcher_{a.clients}")
    print()
    if overhead_note:
        print(overhead_note if overhead is None else f"binding overhead, {overhead_note}:")
    if overhead:
        c = overhead["c"]
        for name, label in (("python", sp.binding), ("ctypes", "the same through ctypes"),
                            ("c_gil", "split: C, the GIL given up per call"),
                            ("c_gil_array", "split: C, the GIL and a new output array per call"),
                            ("direct", "split: the extension's model_call from Python")):
            if name in overhead:
                d = sorted(p - q for p, q in zip(overhead[name], c))
                q1, q3 = d[len(d) // 4], d[(3 * len(d)) // 4]
                print(f"binding overhead per call, {label} (a 4-4 model, minus the C loop, "
                      f"{len(d)} sets): median {statistics.median(d):.2f} us, quartiles "
                      f"{q1:.2f} to {q3:.2f}, range {d[0]:.2f} to {d[-1]:.2f} (this side "
                      f"{statistics.median(overhead[name]):.2f} us a call, C "
                      f"{statistics.median(c):.2f})")
    print(f"bare ctypes call (sp_stream_index): {mine['ctypes_call_ns']:.0f} ns")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"streampool": mine, "torch": torch_res, "c_threads": c_res,
                       "binding_overhead_us": overhead, "binding_overhead_c": overhead_note},
                      f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
