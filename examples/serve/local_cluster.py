#!/usr/bin/env python3
"""A local Ray cluster serving a streampool model with N replicas, each with its own device,
model and batcher (streampool.serve), on loopback HTTP; optionally a load run against it.

usage: local_cluster.py [--replicas 2] [--port 8000] [--dims 512,1024,1024,512]
                        [--num-gpus 0] [--num-cpus 0.5] [--max-batch 16]
                        [--load SECONDS] [--threads 32] [--rows 1]

Writes seeded weights to a temporary safetensors file, starts Ray on this machine (2 CPUs'
worth of replicas fit a 2-core box: num_cpus 0.5 each), deploys the app at
http://127.0.0.1:PORT/sp and prints a curl line. With --load it runs examples/serve/loadgen.py's
load (every answer checked against the float64 reference) and exits, shutting the cluster down;
without, it serves until Ctrl-C. --num-gpus 1 gives every replica a GPU of its own (CUDA).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadgen import HttpClient, run_load  # noqa: E402
from weights import close_to_reference, write_layers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--dims", default="512,1024,1024,512")
    ap.add_argument("--num-gpus", type=float, default=0)
    ap.add_argument("--num-cpus", type=float, default=0.5)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--load", type=float, default=0, metavar="SECONDS")
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--rows", type=int, default=1)
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from streampool import serve as sps

    tmp = tempfile.mkdtemp(prefix="spserve")
    path = os.path.join(tmp, "mlp.safetensors")
    layers = write_layers(path, dims, seed=1)
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=100 << 20)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        settings = {"model_path": path, "max_batch": args.max_batch}
        t = time.perf_counter()
        handle = serve.run(sps.app(settings, num_replicas=args.replicas, num_gpus=args.num_gpus,
                                   num_cpus=args.num_cpus), name="sp", route_prefix="/sp")
        url = f"http://127.0.0.1:{args.port}/sp"
        info = handle.info.remote().result(timeout_s=60)
        print(f"{args.replicas} replicas up in {time.perf_counter() - t:.1f} s at {url} "
              f"({info['backend']}: {info['device']}, {dims} f32)")
        print(f"try: curl -s {url}    (GET: a replica's info; POST {{\"x\": row or rows}}: y)")
        if args.load > 0:
            r = run_load(lambda: HttpClient(url), dims[0], args.threads, args.rows, args.load,
                         check=lambda x, y: close_to_reference(layers, x, y))
            print(f"HTTP, {args.threads} threads, {args.rows} rows/request: {r['rows_s']:.0f} "
                  f"rows/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, errors "
                  f"{r['errors']}, wrong answers {r['wrong']}")
            if r["errors"] or r["wrong"] or not r["requests"]:
                raise SystemExit(1)
        else:
            print("serving; Ctrl-C stops")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
