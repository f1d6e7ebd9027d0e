"""Goal: streampool.serve on a local Ray cluster answers every request right, from 32 client
threads over HTTP and the handle API; a replica killed under load loses no request; a replica
scaled away under load finishes its requests (graceful shutdown); bad requests get a 4xx with a
message and the replicas keep serving; `import streampool` does not import Ray.
Method: one local Ray cluster (loopback HTTP on a free port, 2 CPUs, a small object store) with
the app of 2 replicas on host devices, each loading the same safetensors weights; every answer is
compared with the float64 NumPy reference of those weights (f32: relative error <= 1e-5).
Load: 32 threads, seeded requests of 1..5 rows (and some of 20, a whole batch), alternately
HTTP and handle. Kill: while the load runs, one replica's process gets SIGKILL; a failed request
(HTTP 5xx, connection error, a Ray actor error) is retried by the client (at most 8 times),
and the test prints those retries: Serve does not retry the requests that were running on the
dead replica (HTTP: 500 from its proxy; handle: ActorDiedError; 10-13 per run with Ray 2.60). Scale-down: while the load runs the app is redeployed with 1 replica; no client
retry is allowed then, so any request lost in the graceful shutdown fails the test. Every wait
has a timeout, and the cluster is shut down at the end even on failure. Skipped with a line when
Ray Serve is not installed (scripts/python-test.sh installs ray[serve] into the venv).
"""
import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="serve tests skipped: ray[serve] is not installed")
serve = pytest.importorskip("ray.serve", reason="serve tests skipped: ray[serve] is not installed")

import streampool as sp  # noqa: E402
from streampool import serve as sps  # noqa: E402
from conftest import DIMS, make_layers, reference, rel_err, save_layers  # noqa: E402

CLIENTS = 32
REQUESTS_PER_CLIENT = 8
MAX_BODY = 64 << 10
APP, ROUTE = "sp", "/sp"
TIMEOUT = 60  # seconds, for any one request or wait
LAYERS = make_layers(DIMS, 20261201)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(path):
    return {"model_path": path, "backend": "host", "max_batch": 16, "max_delay_us": 200,
            "workers": 2, "threads": 64, "max_rows": 64, "max_body_bytes": MAX_BODY}


def deploy(path, replicas):
    return serve.run(sps.app(settings(path), num_replicas=replicas, num_cpus=0.25,
                             health_check_period_s=2, graceful_shutdown_timeout_s=30),
                     name=APP, route_prefix=ROUTE)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serve") / "mlp.safetensors")
    save_layers(path, LAYERS)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    port = free_port()
    for attempt in (1, 2):  # Ray gives its raylet 30 s to start: a busy box may not make it
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     object_store_memory=80 << 20, _node_ip_address="127.0.0.1",
                     _temp_dir=tempfile.mkdtemp(prefix="spray", dir="/tmp"))
            break
        except Exception as e:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2:
                raise
            print(f"ray.init failed once ({type(e).__name__}: {str(e)[:200]}); again")
    try:
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
        except Exception as e:  # noqa: BLE001 - Ray waits 60 s for its proxy; a busy box may not
            print(f"serve.start failed once ({type(e).__name__}: {str(e)[:200]}); again")
            serve.shutdown()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
        handle = deploy(path, 2)
        yield {"handle": handle, "port": port, "path": path}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


class Client:
    """One client thread's connection: HTTP keep-alive to 127.0.0.1, and the handle."""

    def __init__(self, port, handle):
        self.port, self.handle, self.conn = port, handle, None

    def http(self, method, body=b"", headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            self.conn.request(method, ROUTE, body=body, headers=headers or {})
            r = self.conn.getresponse()
            return r.status, r.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise

    def predict_http(self, x):
        status, body = self.http("POST", json.dumps({"x": x.tolist()}).encode(),
                                 {"Content-Type": "application/json"})
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        return np.asarray(json.loads(body)["y"], dtype=np.float64)

    def predict_handle(self, x):
        return self.handle.predict.remote(x).result(timeout_s=TIMEOUT)


def replica_pids(handle, want=2, deadline_s=TIMEOUT):
    """The pids of the app's replicas, asked until `want` distinct ones answered."""
    pids, end = set(), time.monotonic() + deadline_s
    while len(pids) < want and time.monotonic() < end:
        pids.add(handle.info.remote().result(timeout_s=TIMEOUT)["pid"])
    return pids


def run_load(port, handle, max_attempts, progress, until):
    """CLIENTS threads, each sending requests (at least REQUESTS_PER_CLIENT, and on until
    `until` is set); every answer checked. Returns (threads, failures, retries, done, sent):
    failures lists (client, request, message), retries the errors retried."""
    failures, retries, done, sent = [], [], [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def body(c):
        rng = np.random.default_rng(1000 + c)
        cl = Client(port, handle)
        barrier.wait(timeout=TIMEOUT)
        k = 0
        while k < REQUESTS_PER_CLIENT or not until.is_set():
            k += 1
            with lock:
                sent[0] += 1
            rows = 20 if k % 7 == 3 else int(rng.integers(1, 6))
            x = rng.standard_normal((rows, DIMS[0]), dtype=np.float32)
            if k % 5 == 1:
                x = x[0]  # one row, sent without the batch dimension
            ref = reference(LAYERS, x.reshape(-1, DIMS[0])).reshape(
                (-1,) if x.ndim == 1 else (rows, -1))
            via = cl.predict_http if (c + k) % 2 else cl.predict_handle
            for attempt in range(max_attempts):
                try:
                    y = via(x)
                    break
                except Exception as e:  # noqa: BLE001 - a failed attempt, retried or recorded
                    err = f"{type(e).__name__}: {str(e)[:300]}"
                    if attempt + 1 == max_attempts:
                        with lock:
                            failures.append((c, k, f"lost after {max_attempts} attempts: {err}"))
                        y = None
                        break
                    with lock:
                        retries.append(err)
                    time.sleep(0.2 * (attempt + 1))
            if y is None:
                continue
            if y.shape != ref.shape or rel_err(np.asarray(y), ref) > 1e-5:
                with lock:
                    failures.append((c, k, f"wrong answer: shape {y.shape} vs {ref.shape}, "
                                           f"y[:4]={np.ravel(y)[:4]} ref[:4]={np.ravel(ref)[:4]}"))
            with lock:
                done[0] += 1
                if done[0] >= CLIENTS * 4:
                    progress.set()

    threads = [threading.Thread(target=body, args=(c,), daemon=True) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads, failures, retries, done, sent


def join_all(threads, deadline_s):
    end = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    return [t for t in threads if t.is_alive()]


def test_import_streampool_does_not_import_ray():
    code = "import sys, streampool; assert 'ray' not in sys.modules, 'ray imported'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.stdout, r.stderr)


def test_parse_json_rows():
    a, single = sps.parse_json_rows(b'{"x": [1, 2.5]}', 2, 4)
    assert single and a.dtype == np.float32 and a.tolist() == [[1.0, 2.5]]
    a, single = sps.parse_json_rows(b'{"x": [[1, 2], [3, 4]]}', 2, 4)
    assert not single and a.shape == (2, 2)
    for body, status, match in [
            (b"{not json", 400, "not JSON"), (b"\xff\xfe", 400, "not JSON"),
            (b"[1, 2]", 400, "JSON object"), (b'{"y": [1, 2]}', 400, "JSON object"),
            (b'{"x": []}', 400, "non-empty"), (b'{"x": [1]}', 400, "expected a list of 2"),
            (b'{"x": [[1, 2], [3]]}', 400, "row 1"), (b'{"x": [[1, 2], 3]}', 400, "row 1"),
            (b'{"x": ["1", 2]}', 400, "is not a number"), (b'{"x": [true, 2]}', 400, "True"),
            (b'{"x": [null, 2]}', 400, "None"), (b'{"x": [1e39, 2]}', 400, "finite float32"),
            (b'{"x": [NaN, 2]}', 400, "finite"), (b'{"x": [' + b"[1, 2]," * 4 + b"[1, 2]]}",
                                                   413, "max_rows=4")]:
        with pytest.raises(sps.BadRequest, match=match) as ei:
            sps.parse_json_rows(body, 2, 4)
        assert ei.value.status == status, (body, ei.value.status)


def test_settings_checked():
    with pytest.raises(sp.InvalidArgumentError, match="exactly one of"):
        sps.ServeSettings.of({})
    with pytest.raises(sp.InvalidArgumentError, match="unknown serve settings"):
        sps.ServeSettings.of({"mlp_dims": [2, 2], "max_btach": 4})
    with pytest.raises(sp.InvalidArgumentError, match="threads"):
        sps.ServeSettings.of({"mlp_dims": [2, 2], "threads": 0})


def test_replica_close_finishes_accepted_requests(weights_path):
    """The replica's shutdown without a cluster: 16 requests in flight when aclose() starts
    all finish with right answers (and the rows of a cancelled one end before the batcher
    closes); a request after it gets ShuttingDown; close is idempotent; the health probe
    fails when the device answers differently."""
    r = sps._Replica(settings(weights_path))
    xs = [np.random.default_rng(i).standard_normal((3, DIMS[0]), dtype=np.float32)
          for i in range(16)]

    async def one(x):
        r.enter()
        try:
            return await r.run(x)
        finally:
            r.leave(x.shape[0])

    async def main():
        tasks = [asyncio.ensure_future(one(x)) for x in xs]
        cancelled = asyncio.ensure_future(one(np.ones((8, DIMS[0]), np.float32)))
        await asyncio.sleep(0)  # every request has entered and handed its rows to the pool
        assert r.inflight == 17
        cancelled.cancel()  # as when a client goes away: it leaves, its rows run on
        await asyncio.wait([cancelled], timeout=TIMEOUT)
        assert cancelled.cancelled() and r.inflight <= 16
        await asyncio.wait_for(r.aclose(), TIMEOUT)
        assert all(t.done() for t in tasks)
        return [t.result() for t in tasks]

    r.health()  # the device answers the probe as at start-up
    right = r.probe_answer
    r.probe_answer = right + 1.0  # as if the device now computed something else
    with pytest.raises(RuntimeError, match="health probe"):
        r.health()
    r.probe_answer = right
    ys = asyncio.run(main())
    for x, y in zip(xs, ys):
        assert rel_err(y, reference(LAYERS, x)) <= 1e-5
    assert r.closed and r.served == 16 * 3 + 8
    with pytest.raises(sps.ShuttingDown):
        r.enter()
    with pytest.raises(sps.ShuttingDown):
        r.health()
    assert r.close(timeout=1)


def test_bad_requests_get_4xx_and_replicas_keep_serving(cluster):
    h, port = cluster["handle"], cluster["port"]
    pids = replica_pids(h)
    assert len(pids) == 2, pids
    cl = Client(port, h)
    good = np.random.default_rng(7).standard_normal((2, DIMS[0]), dtype=np.float32)
    big = b'{"x": [' + b"0.0, " * (MAX_BODY // 5) + b"0.0]}"
    cases = [
        ("POST", b"garbage", 400, "not JSON"),
        ("POST", b'{"x": [[1, 2]]}', 400, f"expected a list of {DIMS[0]} numbers"),
        ("POST", json.dumps({"x": [["a"] * DIMS[0]]}).encode(), 400, "not a number"),
        ("POST", json.dumps({"x": [[0.0] * DIMS[0]] * 65}).encode(), 413, "max_rows=64"),
        ("POST", big, 413, f"max_body_bytes={MAX_BODY}"),
        ("PUT", b"{}", 405, "not allowed"),
    ]
    for method, body, status, match in cases * 2:  # twice: every replica likely sees each
        got, text = cl.http(method, body)
        assert got == status and match in json.loads(text)["error"], (method, body[:40], got,
                                                                      text[:200])
        np.testing.assert_allclose(cl.predict_http(good), reference(LAYERS, good), rtol=1e-5,
                                   atol=1e-6)
    # A body over the limit sent without Content-Length (chunked) is cut off as it streams in.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.request("POST", ROUTE, body=iter([big[i:i + 4096] for i in range(0, len(big), 4096)]),
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "max_body_bytes" in json.loads(r.read())["error"]
    conn.close()
    got, text = cl.http("GET")
    assert got == 200 and json.loads(text)["in_features"] == DIMS[0]
    for bad, match in [(good.astype(np.float64), "float64, not float32"),
                       (good[:, :3], "must have shape"), (good.tolist(), "NumPy array"),
                       (np.zeros((65, DIMS[0]), np.float32), "max_rows=64")]:
        with pytest.raises(sps.BadRequest, match=match):
            cl.predict_handle(bad)
        np.testing.assert_allclose(cl.predict_handle(good), reference(LAYERS, good), rtol=1e-5,
                                   atol=1e-6)
    assert replica_pids(h) == pids  # no replica died or was replaced


def test_replica_killed_under_load_loses_nothing(cluster):
    h, port = cluster["handle"], cluster["port"]
    pids = replica_pids(h)
    assert len(pids) == 2, pids
    victim = min(pids)
    progress, until = threading.Event(), threading.Event()
    threads, failures, retries, done, sent = run_load(port, h, 8, progress, until)
    try:
        assert progress.wait(TIMEOUT), f"the load made no progress: {done[0]} requests done"
        before = done[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(3)  # the load goes on while Serve notices the death
    finally:
        until.set()
    alive = join_all(threads, 4 * TIMEOUT)
    print(f"\nserve kill test: {done[0]} requests answered ({before} before the SIGKILL of "
          f"replica pid {victim}), {len(retries)} client retries: {sorted(set(retries))[:4]}")
    assert not alive, f"{len(alive)} client threads still running"
    assert not failures, failures[:5]
    assert done[0] == sent[0] > before
    # Serve replaces the dead replica: two replicas answer again, one of them new.
    end = time.monotonic() + 2 * TIMEOUT
    now = set()
    while time.monotonic() < end and (len(now) < 2 or victim in now):
        now = replica_pids(h, deadline_s=5)
        time.sleep(0.5)
    assert len(now) == 2 and victim not in now, (pids, now)


def test_scale_down_under_load_finishes_requests(cluster):
    """Redeploying with 1 replica stops one under load: Serve's graceful shutdown and the
    replica's own (accepted requests awaited before the batcher closes) lose nothing, with no
    client retry."""
    h, port = cluster["handle"], cluster["port"]
    assert len(replica_pids(h)) == 2
    progress, until = threading.Event(), threading.Event()
    threads, failures, retries, done, sent = run_load(port, h, 1, progress, until)
    try:
        assert progress.wait(TIMEOUT), f"the load made no progress: {done[0]} requests done"
        before = done[0]
        h1 = deploy(cluster["path"], 1)  # the load runs on until one replica is left
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end and sum(serve.status().applications[APP].deployments[
                "StreampoolDeployment"].replica_states.values()) != 1:
            time.sleep(0.2)
        during = done[0] - before
    finally:
        until.set()
    alive = join_all(threads, 4 * TIMEOUT)
    print(f"\nserve scale-down test: {done[0]} requests answered, {during} while 2 -> 1 "
          f"replica, no retry allowed")
    assert not alive, f"{len(alive)} client threads still running"
    assert not failures, failures[:5]
    assert done[0] == sent[0] and not retries and during > 0
    assert len(replica_pids(h1, want=2, deadline_s=3)) == 1


def test_build_app_reads_command_line_strings():
    """`serve run streampool.serve:build_app k=v` passes strings; they become typed settings."""
    a = sps.build_app({"mlp_dims": "8,4", "num_replicas": "2", "max_batch": "8",
                       "num_gpus": "0", "dtype": "bf16", "seed": "3"})
    d = a._bound_deployment  # Ray's Application keeps its deployment here
    assert d.num_replicas == 2 and d.ray_actor_options["num_gpus"] == 0.0
    s = d.init_args[0]
    assert (s.mlp_dims, s.max_batch, s.seed, s.dtype) == ([8, 4], 8, 3, "bf16")
    with pytest.raises(sp.InvalidArgumentError, match="unknown serve settings"):
        sps.build_app({"mlp_dims": "8,4", "replicas": "2"})
