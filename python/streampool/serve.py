"""streampool.serve: a Ray Serve deployment with one device, one model and one batcher per replica.

Ray Serve's own request path is slow for small models (a few thousand requests/s per replica), so
rows are batched *inside* a replica: every request's rows go to one streampool Batcher, where the
rows of all concurrent requests meet and run as batched forward passes. Request handlers are
async; each row's blocking batcher call runs in the replica's thread pool with the GIL released
(one C call), so many requests are in flight at once (``max_ongoing_requests``, default 256).
A request with at least ``max_batch`` rows is already a batch and runs as one forward on the
model, in the pool too.

Two ways in:

* HTTP: ``POST`` a JSON object ``{"x": [[...], ...]}`` (rows) or ``{"x": [...]}`` (one row) to
  the route prefix; the answer is ``{"y": ...}`` of the same form. ``GET`` returns the replica's
  description (backend, device, model dims, batcher stats). A bad request (not JSON, wrong shape,
  non-numbers, too many rows, a body over ``max_body_bytes``) gets a 4xx with ``{"error": msg}``;
  a replica that is shutting down answers 503.
* The handle API: ``handle.predict.remote(x)`` with ``x`` a float32 NumPy array ``[in]`` or
  ``[B, in]`` returns the float32 answer ``[out]`` or ``[B, out]``; a bad argument raises
  :class:`BadRequest` (a ``ValueError``) in the caller.

The device is a GPU when the replica has ``num_gpus=1`` (Ray sets CUDA_VISIBLE_DEVICES, so it is
index 0 in the replica), else the host backend. ``check_health`` (called by Serve every
``health_check_period_s``) runs a one-row forward and compares it with the answer computed at
start-up (relative error 1e-4 for f32, 2e-2 for bf16, 4e-3 for f16), and syncs the device: a device that
fails or answers differently marks the replica unhealthy and Serve replaces it. Shutdown is
graceful: Serve stops routing to the replica and waits for its requests
(``graceful_shutdown_timeout_s``); then the replica refuses new work, waits for the requests it
accepted, closes the batcher (which finishes every accepted row), and closes the device.

Ray is imported only here (``import streampool`` does not need it). Build an application with
:func:`app`, or from the command line with ``serve run streampool.serve:build_app key=value ...``
(see docs/SERVE.md).
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

import streampool as sp

try:
    from ray import serve
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("streampool.serve needs Ray Serve: pip install 'ray[serve]'") from e

__all__ = ["ServeSettings", "StreampoolDeployment", "BadRequest", "ShuttingDown", "app",
           "build_app", "parse_json_rows"]


class BadRequest(ValueError):
    """A request the replica refuses (wrong shape or dtype, not JSON, too large); ``status`` is
    the HTTP status it gets (400 or 413). The replica keeps serving."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # keep status across Ray's pickling of the exception
        return (BadRequest, (str(self), self.status))


class ShuttingDown(RuntimeError):
    """The replica is closing and takes no new request (HTTP 503); another replica can."""


@dataclass
class ServeSettings:
    """What a replica runs. Either ``model_path`` (a safetensors MLP that describes its layers:
    "streampool.arch" in its metadata or a config.json beside it; readable
    on every node) or ``mlp_dims`` + ``seed`` (a seeded MLP, the same on every replica).

    backend: "auto" (CUDA when the replica has a GPU, else host), "host" or "cuda";
    device_index: the device within the replica's visible ones (0: the GPU Ray assigned);
    streams: the device's stream pool size (0: the library's default);
    dtype: weights in "f32", "bf16" or "f16";
    max_batch, max_delay_us, workers: the batcher's settings (0: the library's defaults);
    threads: the replica's thread pool for blocking batcher calls (rows in flight at once);
    max_rows: rows per request at most; max_body_bytes: HTTP body size at most (413 beyond).
    """
    model_path: Optional[str] = None
    mlp_dims: Optional[List[int]] = None
    seed: int = 0
    dtype: str = "f32"
    backend: str = "auto"
    device_index: int = 0
    streams: int = 0
    max_batch: int = 0
    max_delay_us: int = 0
    workers: int = 0
    threads: int = 64
    max_rows: int = 4096
    max_body_bytes: int = 16 << 20

    @classmethod
    def of(cls, value: Union["ServeSettings", Dict[str, Any], None]) -> "ServeSettings":
        """Settings from a ServeSettings, a dict (a Serve config file's ``args``) or None."""
        if isinstance(value, cls):
            s = cls(**asdict(value))
        elif value is None or isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value or {}) - known)
            if unknown:
                raise sp.InvalidArgumentError(f"unknown serve settings {unknown}; known: "
                                              f"{sorted(known)}")
            s = cls(**(value or {}))
        else:
            raise sp.InvalidArgumentError(f"settings must be a ServeSettings or a dict, got "
                                          f"{type(value).__name__}")
        s.check()
        return s

    def check(self) -> None:
        if (self.model_path is None) == (self.mlp_dims is None):
            raise sp.InvalidArgumentError("serve settings need exactly one of model_path and "
                                          "mlp_dims")
        for name in ("threads", "max_rows", "max_body_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise sp.InvalidArgumentError(f"{name} must be an int >= 1, got {v!r}")


def parse_json_rows(body: bytes, features: int, max_rows: int) -> Tuple[np.ndarray, bool]:
    """The rows of an HTTP body ``{"x": [...]}`` as float32 [B, features], and whether it was one
    row (``x`` a list of numbers). Raises BadRequest with the reason."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from None
    if not isinstance(doc, dict) or "x" not in doc:
        raise BadRequest('the body must be a JSON object {"x": [row, ...]} or {"x": row}')
    x = doc["x"]
    if not isinstance(x, list) or not x:
        raise BadRequest('"x" must be a non-empty list (one row of numbers, or rows)')
    single = not isinstance(x[0], list)
    rows = [x] if single else x
    if len(rows) > max_rows:
        raise BadRequest(f"{len(rows)} rows, more than max_rows={max_rows}", 413)
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) != features:
            got = f"{len(r)} values" if isinstance(r, list) else type(r).__name__
            raise BadRequest(f"row {i}: expected a list of {features} numbers, got {got}")
        for v in r:  # bool is an int in Python; JSON true/false are not numbers here
            if type(v) is not float and type(v) is not int:
                raise BadRequest(f"row {i}: {v!r} is not a number")
    try:
        a = np.array(rows, dtype=np.float64)
    except OverflowError:
        raise BadRequest("a value is out of range") from None
    if not np.isfinite(a).all() or np.abs(a).max() > np.finfo(np.float32).max:
        raise BadRequest("values must be finite float32 numbers")
    return a.astype(np.float32), single


def _check_array(x: Any, features: int, max_rows: int) -> Tuple[np.ndarray, bool]:
    """x for the handle API: a float32 NumPy array [features] or [B, features]."""
    if not isinstance(x, np.ndarray):
        raise BadRequest(f"x must be a float32 NumPy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise BadRequest(f"x has dtype {x.dtype}, not float32 (convert with "
                         f".astype(np.float32))")
    single = x.ndim == 1
    a = x[None, :] if single else x
    if a.ndim != 2 or a.shape[1] != features or a.shape[0] == 0:
        raise BadRequest(f"x must have shape [{features}] or [batch, {features}], got "
                         f"{list(x.shape)}")
    if a.shape[0] > max_rows:
        raise BadRequest(f"{a.shape[0]} rows, more than max_rows={max_rows}", 413)
    return np.ascontiguousarray(a), single


class _Replica:
    """The replica's state: device, model, batcher, thread pool, and the count of requests in
    flight (guarded by ``_cv``). ``close`` waits for it to reach 0, then for the pool's every
    row, and only then closes the batcher, so no batcher call runs during or after the close."""

    def __init__(self, settings: Union[ServeSettings, Dict[str, Any], None]) -> None:
        s = self.settings = ServeSettings.of(settings)
        self.dev = sp.Device(s.backend, s.device_index, streams=s.streams)
        try:
            if s.model_path is not None:
                self.model = sp.Model.load(self.dev, s.model_path, dtype=s.dtype)
            else:
                self.model = sp.Model.mlp_random(self.dev, s.mlp_dims, seed=s.seed,
                                                 dtype=s.dtype)
            self.batcher = sp.Batcher(self.model, max_batch=s.max_batch,
                                      max_delay_us=s.max_delay_us, workers=s.workers)
            self.max_batch = s.max_batch or 16
            # The health probe: one fixed row, and the answer it gave at start-up.
            self.probe = np.linspace(-1.0, 1.0, self.model.in_features, dtype=np.float32)[None]
            self.probe_answer = self.model(self.probe)
        except BaseException:
            self.dev.close()
            raise
        self.pool = ThreadPoolExecutor(s.threads, thread_name_prefix="streampool-serve")
        self._cv = threading.Condition()
        self.inflight = 0
        self.closing = False
        self.closed = False
        self.served = 0

    # -- requests --
    def enter(self) -> None:
        with self._cv:
            if self.closing:
                raise ShuttingDown("this replica is shutting down")
            self.inflight += 1

    def leave(self, rows: int) -> None:
        with self._cv:
            self.inflight -= 1
            self.served += rows
            if self.inflight == 0:
                self._cv.notify_all()

    async def run(self, a: np.ndarray) -> np.ndarray:
        """y for rows a [B, in] (float32, contiguous), between enter() and leave()."""
        loop = asyncio.get_running_loop()
        if a.shape[0] >= self.max_batch:  # already a batch: one forward
            return await loop.run_in_executor(self.pool, self.model, a)
        ys = await asyncio.gather(*[loop.run_in_executor(self.pool, self.batcher, a[i])
                                    for i in range(a.shape[0])])
        return np.stack(ys)

    # -- health and shutdown --
    def health(self) -> None:
        if self.closing:
            raise ShuttingDown("this replica is shutting down")
        y = self.model(self.probe)
        self.dev.sync()
        # Not bitwise: another stream may pick another GEMM algorithm on CUDA.
        ref = self.probe_answer
        tol = {"f32": 1e-4, "bf16": 2e-2, "f16": 4e-3}[self.model.dtype]
        err = float(np.max(np.abs(y - ref))) / max(float(np.max(np.abs(ref))), 1e-30)
        if not err <= tol:  # also catches NaN
            raise RuntimeError(f"the device answers the health probe with {y[0, :4]}..., "
                               f"not {ref[0, :4]}... as at start-up (relative error {err:.3g})")

    async def aclose(self) -> None:
        """close() from the event loop that runs the requests: refuses new ones, awaits the
        accepted ones, then closes in a thread."""
        with self._cv:
            self.closing = True
        while self.inflight:
            await asyncio.sleep(0.005)
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Refuses new requests, waits (up to timeout s; None: until they end) for the accepted
        ones, then closes batcher, pool and device. Returns False, closing nothing, if requests
        were still in flight at the timeout (their rows may still reach the batcher)."""
        with self._cv:
            self.closing = True
            if not self._cv.wait_for(lambda: self.inflight == 0, timeout):
                return False
            if self.closed:
                return True
            self.closed = True
        # The pool first: it waits for every row handed to it, also those of a request that
        # left early (cancelled by its client, or a sibling row failed), so no batcher call
        # runs once the batcher closes.
        self.pool.shutdown(wait=True)
        self.batcher.close()
        self.dev.close()
        return True


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1},
                  health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=30)
class StreampoolDeployment:
    """One replica: a device, a model and a batcher (see the module's docstring)."""

    def __init__(self, settings: Union[ServeSettings, Dict[str, Any], None] = None) -> None:
        self._r = _Replica(settings)

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """The handle API: x float32 [in] or [B, in] -> [out] or [B, out]."""
        r = self._r
        a, single = _check_array(x, r.model.in_features, r.settings.max_rows)
        r.enter()
        try:
            y = await r.run(a)
        finally:
            r.leave(a.shape[0])
        return y[0] if single else y

    async def __call__(self, request: Any) -> Any:
        """The HTTP route: POST {"x": rows or row} -> {"y": ...}; GET -> info()."""
        from starlette.responses import JSONResponse, Response
        r = self._r
        if request.method == "GET":
            return JSONResponse(self.info())
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method} not allowed; POST JSON"},
                                status_code=405)
        try:
            body = await self._read_body(request)
            a, single = parse_json_rows(body, r.model.in_features, r.settings.max_rows)
            r.enter()
        except BadRequest as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        except ShuttingDown as e:
            return JSONResponse({"error": str(e)}, status_code=503)
        try:
            y = await r.run(a)
        finally:
            r.leave(a.shape[0])
        out = y[0].tolist() if single else y.tolist()
        return Response(json.dumps({"y": out}), media_type="application/json")

    async def _read_body(self, request: Any) -> bytes:
        limit = self._r.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise BadRequest(f"bad Content-Length {length!r}")
            if int(length) > limit:
                raise BadRequest(f"the body has {length} bytes, more than max_body_bytes="
                                 f"{limit}", 413)
        chunks, n = [], 0
        async for chunk in request.stream():  # also bounds a body sent without a length
            n += len(chunk)
            if n > limit:
                raise BadRequest(f"the body is over max_body_bytes={limit}", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    def info(self) -> Dict[str, Any]:
        """The replica's process id, device, model dims and dtype, rows served, batcher stats."""
        r = self._r
        return {"pid": os.getpid(), "backend": r.dev.backend, "device": r.dev.info.name,
                "in_features": r.model.in_features, "out_features": r.model.out_features,
                "dtype": r.model.dtype, "rows_served": r.served, "inflight": r.inflight,
                "batcher": r.batcher.stats() if not r.closed else None}

    def check_health(self) -> None:
        """Serve's health check: a one-row forward equal to the start-up answer, and a device
        sync; raises (the replica is replaced) when the device fails."""
        self._r.health()

    async def __del__(self) -> None:
        # Serve awaits this on the replica's event loop after its graceful-shutdown wait for
        # ongoing requests. Requests still in flight (after that wait's timeout) run on this
        # loop, so they are awaited here, not blocked on; then the batcher, pool and device
        # close in a thread.
        r = getattr(self, "_r", None)
        if r is not None:
            await r.aclose()

def app(settings: Union[ServeSettings, Dict[str, Any]], *, num_replicas: int = 1,
        num_gpus: float = 0, num_cpus: float = 1, max_ongoing_requests: int = 256,
        name: Optional[str] = None, **options: Any) -> Any:
    """A Serve application of ``num_replicas`` replicas, each with its own device (num_gpus=1: a
    GPU each), model and batcher; pass it to ``serve.run``. ``options`` go to
    ``StreampoolDeployment.options`` (e.g. health_check_period_s, autoscaling_config)."""
    s = ServeSettings.of(settings)
    d = StreampoolDeployment.options(
        num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        **({"name": name} if name else {}), **options)
    return d.bind(s)


_APP_ARGS = {"num_replicas": int, "num_gpus": float, "num_cpus": float,
             "max_ongoing_requests": int}


def build_app(args: Dict[str, Any]) -> Any:
    """The application builder for ``serve run streampool.serve:build_app k=v ...`` and the
    ``import_path`` of a Serve config file: the ServeSettings fields (``mlp_dims`` as
    "512,1024,512") and num_replicas, num_gpus, num_cpus, max_ongoing_requests."""
    args = dict(args)
    opts = {k: conv(args.pop(k)) for k, conv in _APP_ARGS.items() if k in args}
    types = {f.name: f.type for f in fields(ServeSettings)}
    for k, v in list(args.items()):
        if k == "mlp_dims" and isinstance(v, str):
            args[k] = [int(t) for t in v.split(",")]
        elif isinstance(v, str) and k in types and "int" in str(types[k]) and k != "model_path":
            args[k] = int(v)
    return app(args, **opts)
