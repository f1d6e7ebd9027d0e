#!/usr/bin/env python3
"""Scale-out on Ray Serve (issue 12): streampool.serve with 1 and 2 replicas, beside the same
model in PyTorch (CPU) behind @serve.batch, in the same run, on one local Ray cluster.

Rows (the 512-1024-1024-512 MLP, f32, seeded PyTorch-style weights in one safetensors file that
both systems load):
  streampool: streampool.serve's deployment (a host device, a model and a Batcher per replica;
      each row's blocking batcher call in the replica's thread pool, the GIL released);
  torch: a deployment with an nn.Sequential of the same weights, rows merged by @serve.batch
      (max_batch_size and batch_wait_timeout_s equal to the batcher's max_batch and
      max_delay_us), one forward per batch under torch.inference_mode(); skipped with a line
      when torch is missing.
Load: `--clients` Python threads in this process, each sending requests of `--rows` rows
through a Serve handle (handle.predict.remote(x).result()) and, with --path http, over HTTP
(JSON, one keep-alive connection per thread, 127.0.0.1), for --duration seconds after a warm-up;
the first answers of every thread are checked against the float64 NumPy reference of the
weights (a wrong one fails the run). Columns: rows/s, p50 and p99 latency per request, errors,
and rows/s against torch at the same replicas and path.
The client threads, Ray's proxy and the replicas share this machine's cores: on a small machine
the numbers are the whole system's, not the replicas' alone.

usage: serve_bench.py [--replicas 1,2] [--clients 32] [--rows 1] [--duration 8]
                      [--path handle,http] [--dims 512,1024,1024,512] [--max-batch 16]
                      [--max-delay-us 200] [--num-cpus 0.5] [--json FILE]
The package is imported as installed, or from PYTHONPATH=python with STREAMPOOL_LIBRARY set to a
build's libstreampool.so (the replicas inherit the environment of this local cluster).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/torch/ (the C++ peers) would shadow PyTorch as a namespace package: not on the path.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(HERE, "..", "examples", "serve"))
from loadgen import HttpClient, run_load  # noqa: E402
from weights import close_to_reference, write_layers  # noqa: E402

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402
from ray import serve  # noqa: E402

from streampool import serve as sps  # noqa: E402

try:  # torch itself is imported in the torch replicas only
    import importlib.metadata
    TORCH_VERSION = importlib.metadata.version("torch")
    HAVE_TORCH = True
except importlib.metadata.PackageNotFoundError:
    HAVE_TORCH, TORCH_VERSION = False, None


@serve.deployment(max_ongoing_requests=256)
class TorchMLP:
    """The same MLP in PyTorch (CPU), rows of concurrent requests merged by @serve.batch."""

    def __init__(self, layers: List[Any], max_batch: int, max_delay_us: int) -> None:
        import torch
        mods: List[Any] = []
        for w, b in layers:
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.copy()))
                lin.bias.copy_(torch.from_numpy(b.copy()))
            mods += [lin, torch.nn.ReLU()]
        self.torch, self.net = torch, torch.nn.Sequential(*mods[:-1]).eval()
        self.rows.set_max_batch_size(max_batch)
        self.rows.set_batch_wait_timeout_s(max_delay_us / 1e6)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0002)
    async def rows(self, xs: List[np.ndarray]) -> List[np.ndarray]:
        with self.torch.inference_mode():
            y = self.net(self.torch.from_numpy(np.stack(xs))).numpy()
        return list(y)

    async def predict(self, x: np.ndarray) -> np.ndarray:
        import asyncio
        a = x[None] if x.ndim == 1 else x
        ys = await asyncio.gather(*[self.rows(a[i]) for i in range(a.shape[0])])
        y = np.stack(ys)
        return y[0] if x.ndim == 1 else y

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse
        if request.method == "GET":
            return JSONResponse({"in_features": self.net[0].in_features})
        body = await request.json()
        x = np.asarray(body["x"], dtype=np.float32)
        y = await self.predict(x)
        return JSONResponse({"y": y.tolist()})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--replicas", default="1,2")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--path", default="handle,http")
    ap.add_argument("--dims", default="512,1024,1024,512")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-delay-us", type=int, default=200)
    ap.add_argument("--num-cpus", type=float, default=0.5)
    ap.add_argument("--json")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    replicas = [int(r) for r in args.replicas.split(",")]
    paths = args.path.split(",")

    tmp = tempfile.mkdtemp(prefix="spbench")
    wpath = os.path.join(tmp, "mlp.safetensors")
    layers = write_layers(wpath, dims, seed=1)
    port = free_port()
    for attempt in (1, 2):  # Ray gives its raylet 30 s to start: a busy box can miss that
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1", object_store_memory=100 << 20)
            break
        except Exception as e:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2:
                raise
            print(f"ray.init failed once ({e}); again")
    results: List[Dict[str, Any]] = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        systems = ["streampool"] + (["torch"] if HAVE_TORCH else [])
        for system in systems:
            for n in replicas:
                opts = {"num_replicas": n, "ray_actor_options": {"num_cpus": args.num_cpus}}
                if system == "streampool":
                    app = sps.app({"model_path": wpath, "backend": "host",
                                   "max_batch": args.max_batch,
                                   "max_delay_us": args.max_delay_us},
                                  num_replicas=n, num_cpus=args.num_cpus)
                else:
                    app = TorchMLP.options(**opts).bind(layers, args.max_batch, args.max_delay_us)
                name = f"{system}{n}"
                handle = serve.run(app, name=name, route_prefix=f"/{name}")
                url = f"http://127.0.0.1:{port}/{name}"
                for path in paths:
                    if path == "handle":
                        def make(h=handle):
                            return lambda x: h.predict.remote(x).result(timeout_s=60)
                    else:
                        def make(u=url):
                            return HttpClient(u)
                    r = run_load(make, dims[0], args.clients, args.rows, args.duration,
                                 check=lambda x, y: close_to_reference(layers, x, y),
                                 check_first=3)
                    r.update(system=system, replicas=n, path=path)
                    results.append(r)
                    print(f"{system:10s} {n} replica(s) {path:6s}: {r['rows_s']:8.0f} rows/s  "
                          f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors "
                          f"{r['errors']}  wrong {r['wrong']}", flush=True)
                    if r["wrong"]:
                        raise SystemExit(f"{system}: {r['wrong']} wrong answers")
                serve.delete(name)
    finally:
        serve.shutdown()
        ray.shutdown()

    by = {(r["system"], r["replicas"], r["path"]): r for r in results}
    print()
    print(f"Scale-out on Ray Serve: {dims} f32 MLP, {args.clients} client threads, {args.rows} "
          f"row(s)/request, {args.duration:g} s each, batcher / @serve.batch max {args.max_batch}"
          f" rows, {args.max_delay_us} us; {platform.node()}, {os.cpu_count()} cores, "
          f"ray {ray.__version__}" + (f", torch {TORCH_VERSION} (CPU)" if HAVE_TORCH else ""))
    if not HAVE_TORCH:
        print("torch rows skipped: torch is not installed here (pip install torch --index-url "
              "https://download.pytorch.org/whl/cpu)")
    print()
    print("| system | replicas | path | rows/s | p50 ms | p99 ms | errors | rows/s vs torch |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        t = by.get(("torch", r["replicas"], r["path"]))
        ratio = f"{r['rows_s'] / t['rows_s']:.2f}x" if t and t["rows_s"] else "-"
        print(f"| {r['system']} | {r['replicas']} | {r['path']} | {r['rows_s']:.0f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
