/* The CUDA backend: devices, non-blocking streams, events and raw segments on the CUDA runtime.
 *
 * Owns: sp__bdevice (an ordinal, its name and its switches), sp__bstream (a cudaStreamNonBlocking
 * stream; its cuBLASLt state lives in cuda_linear.c), sp__bevent (a cudaEvent_t, timing only when
 * asked); graphs and pinned host memory live in cuda_graph.c; the encoder-layer kernels behind
 * nn_async in cuda_nn.cu (this file checks an op, as every backend does, and launches it). The core
 * owns pools, generations and the allocator; nothing here touches them.
 *
 * Invariants: every slot makes its object's device current first (cudaSetDevice is a cheap
 * thread-local switch once the primary context exists), so each slot works from any thread. No
 * stream ever is the legacy default stream, so pool streams never serialize with each other.
 * Every CUDA failure returns SP_ERR_BACKEND (SP_ERR_OUT_OF_MEMORY for allocation failures) with
 * the CUDA error name and text in sp_last_error(); nothing here aborts.
 *
 * Locking: none here; the driver serializes submission to one stream. cuda_linear.c has a mutex
 * per stream for its plan cache.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "backend/nn_check.h"
#include "core/dtype.h"
#include "core/env.h"
#include "cuda_internal.h"
#include "cuda_nn.h"
#include "cuda_pdl.h"

sp_status sp__cuda_fail(cudaError_t e, const char *what) {
  (void)cudaGetLastError(); /* non-sticky errors are also kept as "last error": drop it */
  sp_status st = (e == cudaErrorMemoryAllocation) ? SP_ERR_OUT_OF_MEMORY : SP_ERR_BACKEND;
  return sp__fail(st, "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

sp_status sp__cuda_use_device(const sp__bdevice *d) {
  cudaError_t e = cudaSetDevice(d->ordinal);
  if (SP__UNLIKELY(e != cudaSuccess)) return sp__cuda_fail(e, "cudaSetDevice");
  return SP_OK;
}

/* ---- devices ----------------------------------------------------------------------------- */

static sp_status cuda_device_count(int *count) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    /* No device, no driver, a driver too old, a stub library: all mean "nothing to run on". */
    (void)cudaGetLastError();
    sp__log(SP_LOG_INFO, "cuda: no usable device: %s (%s)", cudaGetErrorString(e),
            cudaGetErrorName(e));
    n = 0;
  }
  *count = n;
  return SP_OK;
}

static sp_status cuda_device_open(int index, sp__bdevice **out) {
  int n = 0;
  cuda_device_count(&n);
  if (index < 0 || index >= n)
    return sp__fail(SP_ERR_NO_DEVICE, "cuda: device %d does not exist (%d devices)", index, n);
  sp__bdevice *d = sp__calloc(1, sizeof(*d));
  if (!d) return sp__fail(SP_ERR_HOST_MEMORY, "cuda: device_open: out of host memory");
  d->ordinal = index;
  sp_status st = sp__cuda_linear_device_init(d); /* STREAMPOOL_CUDA_LINEAR, the choice table */
  if (st != SP_OK) goto fail_free;
  st = sp__cuda_use_device(d);
  if (st != SP_OK) goto fail_linear;
  struct cudaDeviceProp prop;
  cudaError_t e = cudaGetDeviceProperties(&prop, index);
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "cudaGetDeviceProperties");
    goto fail_linear;
  }
  snprintf(d->name, sizeof(d->name), "%s", prop.name);
  bool pdl = true;
  st = sp__env_switch("cuda device_open", "STREAMPOOL_CUDA_PDL", true, &pdl);
  if (st != SP_OK) goto fail_linear;
  /* programmatic dependent launch and clusters: compute capability 9.0+ and kernels built for it */
  d->clusters = prop.major >= 9 && sp__cuda_sm90_built();
  d->pdl = pdl && d->clusters;
  bool pages = true;
  st = sp__env_switch("cuda device_open", "STREAMPOOL_CUDA_PAGES", true, &pages);
  if (st != SP_OK) goto fail_linear;
  d->pages = pages && sp__cuda_vmm_usable(d->ordinal);
  sp__cuda_peer_open(d);
  *out = d;
  return SP_OK;
fail_linear:
  sp__cuda_linear_device_fini(d);
fail_free:
  sp__free(d);
  return st;
}

static void cuda_device_close(sp__bdevice *d) {
  sp__cuda_peer_close(d);
  sp__cuda_linear_device_fini(d);
  sp__free(d);
}

static const char *cuda_device_name(const sp__bdevice *d) { return d->name; }

static sp_status cuda_memory_info(sp__bdevice *d, size_t *free_bytes, size_t *total_bytes) {
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  size_t f = 0, t = 0;
  cudaError_t e = cudaMemGetInfo(&f, &t);
  if (e != cudaSuccess) return sp__cuda_fail(e, "cudaMemGetInfo");
  *free_bytes = f;
  *total_bytes = t;
  return SP_OK;
}

/* ---- streams ----------------------------------------------------------------------------- */

static sp_status cuda_stream_create(sp__bdevice *d, unsigned index, sp__bstream **out) {
  (void)index; /* stream 0 is a pool stream like the others, never the legacy default stream */
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  sp__bstream *s = sp__calloc(1, sizeof(*s));
  if (!s) return sp__fail(SP_ERR_HOST_MEMORY, "cuda: stream_create: out of host memory");
  s->dev = d;
  if (sp__mutex_init(&s->lt_mu, SP__RANK_CUDA_LT) != 0) {
    st = sp__fail(SP_ERR_BACKEND, "cuda: stream_create: pthread_mutex_init failed");
    goto fail_free;
  }
  cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "cudaStreamCreateWithFlags");
    goto fail_mutex;
  }
  *out = s;
  return SP_OK;
fail_mutex:
  sp__mutex_destroy(&s->lt_mu);
fail_free:
  sp__free(s);
  return st;
}

static void cuda_stream_destroy(sp__bstream *s) {
  if (sp__cuda_use_device(s->dev) == SP_OK) {
    cudaError_t e = cudaStreamSynchronize(s->stream);
    if (e != cudaSuccess)
      sp__log(SP_LOG_ERROR, "cuda: stream_destroy: cudaStreamSynchronize: %s",
              cudaGetErrorString(e));
  }
  sp__cuda_linear_release(s);
  cudaStreamDestroy(s->stream);
  (void)cudaGetLastError();
  sp__mutex_destroy(&s->lt_mu);
  sp__free(s);
}

static sp_status cuda_stream_query(sp__bstream *s) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaStreamQuery(s->stream);
  if (e == cudaSuccess) return SP_OK;
  if (e == cudaErrorNotReady) return SP_ERR_NOT_READY;
  return sp__cuda_fail(e, "cudaStreamQuery");
}

static sp_status cuda_stream_sync(sp__bstream *s) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaStreamSynchronize(s->stream);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaStreamSynchronize");
}

static sp_status cuda_memcpy_async(sp__bstream *s, void *dst, const void *src, size_t bytes) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s->stream);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaMemcpyAsync");
}

static sp_status cuda_memset_async(sp__bstream *s, void *dst, int value, size_t bytes) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaMemsetAsync(dst, value, bytes, s->stream);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaMemsetAsync");
}

static sp_status cuda_host_func(sp__bstream *s, void (*fn)(void *), void *arg) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaLaunchHostFunc(s->stream, fn, arg);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaLaunchHostFunc");
}

static sp_status cuda_convert_async(sp__bstream *s, void *dst, sp_dtype dst_type, const void *src,
                                    sp_dtype src_type, size_t n) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e;
  if (dst_type == src_type)
    e = cudaMemcpyAsync(dst, src, n * sp__dtype_size(dst_type), cudaMemcpyDefault, s->stream);
  else e = sp__cuda_convert(s->stream, s->dev->pdl, dst, (int)dst_type, src, (int)src_type, n);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "convert kernel launch");
}

/* The encoder-layer slot: the backend-neutral argument checks (nn_check.c), this backend's own
 * limit (attention's head_dim), then one kernel launch on the stream (cuda_nn.cu). */
static sp_status cuda_nn_async(sp__bstream *s, const sp__nn *op) {
  sp_status st = sp__nn_op_check(op, "cuda nn_async");
  if (st != SP_OK) return st;
  if (op->kind == SP__NN_ATTENTION && op->u.attention.head_dim > SP__CUDA_NN_HEAD_DIM_MAX)
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "cuda nn_async: attention: head_dim %u is above the %u the CUDA attention "
                    "kernel supports",
                    op->u.attention.head_dim, SP__CUDA_NN_HEAD_DIM_MAX);
  st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = sp__cuda_nn(s->stream, s->dev->pdl, op);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "nn kernel launch");
}

/* ---- interop with other runtimes' streams (issue 10) ------------------------------------- */

static sp_status cuda_stream_native(sp__bstream *s, void **out) {
  *out = (void *)s->stream;
  return SP_OK;
}

/* One event per call: recorded on the foreign stream, waited on by s, destroyed at once (CUDA
 * keeps a destroyed event's pending wait valid). */
/* Both ends of the range are device (or managed) memory of d by the driver's pointer attributes. */
static bool cuda_mem_is_foreign(sp__bdevice *d, const void *p, size_t bytes) {
  if (!p || !bytes) return false;
  const void *ends[2] = {p, (const char *)p + (bytes - 1)};
  for (int i = 0; i < 2; i++) {
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, ends[i]) != cudaSuccess) {
      (void)cudaGetLastError(); /* an unknown pointer is not an error of anybody's */
      return false;
    }
    bool device = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    if (!device || a.device != d->ordinal) return false;
  }
  return true;
}

static sp_status cuda_stream_wait_native(sp__bstream *s, void *native) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaEvent_t ev;
  cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
  if (e != cudaSuccess) return sp__cuda_fail(e, "cudaEventCreateWithFlags");
  e = cudaEventRecord(ev, (cudaStream_t)native);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(s->stream, ev, 0);
  cudaError_t d = cudaEventDestroy(ev);
  if (e == cudaSuccess) e = d;
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "stream_wait_native (record, wait)");
}

/* ---- events ------------------------------------------------------------------------------ */

static sp_status cuda_event_create(sp__bdevice *d, unsigned flags, sp__bevent **out) {
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  sp__bevent *ev = sp__calloc(1, sizeof(*ev));
  if (!ev) return sp__fail(SP_ERR_HOST_MEMORY, "cuda: event_create: out of host memory");
  ev->dev = d;
  ev->timing = (flags & SP_EVENT_TIMING) != 0;
  cudaError_t e =
      cudaEventCreateWithFlags(&ev->ev, ev->timing ? cudaEventDefault : cudaEventDisableTiming);
  if (e != cudaSuccess) {
    sp__free(ev);
    return sp__cuda_fail(e, "cudaEventCreateWithFlags");
  }
  *out = ev;
  return SP_OK;
}

static void cuda_event_destroy(sp__bevent *ev) {
  if (sp__cuda_use_device(ev->dev) == SP_OK) cudaEventDestroy(ev->ev);
  (void)cudaGetLastError();
  sp__free(ev);
}

static sp_status cuda_event_record(sp__bevent *ev, sp__bstream *s) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaEventRecord(ev->ev, s->stream);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaEventRecord");
}

static sp_status cuda_stream_wait_event(sp__bstream *s, sp__bevent *ev) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaStreamWaitEvent(s->stream, ev->ev, 0);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaStreamWaitEvent");
}

static sp_status cuda_event_query(sp__bevent *ev) {
  sp_status st = sp__cuda_use_device(ev->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaEventQuery(ev->ev);
  if (e == cudaSuccess) return SP_OK;
  if (e == cudaErrorNotReady) return SP_ERR_NOT_READY;
  return sp__cuda_fail(e, "cudaEventQuery");
}

static sp_status cuda_event_sync(sp__bevent *ev) {
  sp_status st = sp__cuda_use_device(ev->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaEventSynchronize(ev->ev);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaEventSynchronize");
}

static sp_status cuda_event_elapsed_ms(sp__bevent *start, sp__bevent *end, float *ms) {
  if (!start->timing || !end->timing)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: event_elapsed_ms: an event lacks timing");
  sp_status st = sp__cuda_use_device(end->dev);
  if (st != SP_OK) return st;
  float v = 0.0f;
  cudaError_t e = cudaEventElapsedTime(&v, start->ev, end->ev);
  if (e == cudaSuccess) {
    *ms = v;
    return SP_OK;
  }
  (void)cudaGetLastError();
  if (e == cudaErrorNotReady)
    return sp__fail(SP_ERR_NOT_READY, "cuda: event_elapsed_ms: an event has not completed");
  if (e == cudaErrorInvalidResourceHandle)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "cuda: event_elapsed_ms: an event was never recorded (%s)",
                    cudaGetErrorString(e));
  return sp__cuda_fail(e, "cudaEventElapsedTime");
}

/* ---- memory ------------------------------------------------------------------------------ */

/* Segments of whole 2 MiB pages are mapped page by page where the device can (cuda_vmm.c), so
 * their free pages can be given back; the rest come from cudaMalloc. */
static sp_status cuda_mem_alloc(sp__bdevice *d, size_t bytes, void **out) {
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  void *p = NULL;
  st = sp__cuda_vmm_alloc(d, bytes, &p);
  if (st == SP_OK && p) {
    *out = p;
    return SP_OK;
  }
  if (st == SP_ERR_OUT_OF_MEMORY || st == SP_ERR_HOST_MEMORY) return st;
  /* else a mapping call refused (a peer's access, say): the segment comes from cudaMalloc */
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return sp__fail(SP_ERR_OUT_OF_MEMORY, "cuda: cudaMalloc(%zu bytes) on device %d: %s", bytes,
                    d->ordinal, cudaGetErrorString(e));
  }
  if (e != cudaSuccess) return sp__cuda_fail(e, "cudaMalloc");
  *out = p;
  return SP_OK;
}

static sp_status cuda_mem_free(sp__bdevice *d, void *p) {
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  if (p && sp__cuda_vmm_free(p)) return SP_OK;
  cudaError_t e = cudaFree(p);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaFree");
}

const sp__backend sp__cuda_backend = {
    .version = SP__BACKEND_VERSION,
    .name = "cuda",
    .device_count = cuda_device_count,
    .device_open = cuda_device_open,
    .device_close = cuda_device_close,
    .device_name = cuda_device_name,
    .memory_info = cuda_memory_info,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_query = cuda_stream_query,
    .stream_sync = cuda_stream_sync,
    .memcpy_async = cuda_memcpy_async,
    .memset_async = cuda_memset_async,
    .host_func = cuda_host_func,
    .linear_async = sp__cuda_linear_async,
    .linear_f32_io_rows = sp__cuda_linear_f32_io_rows,
    .convert_async = cuda_convert_async,
    .nn_async = cuda_nn_async,
    .nn_head_dim_max = SP__CUDA_NN_HEAD_DIM_MAX,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .stream_wait_event = cuda_stream_wait_event,
    .event_query = cuda_event_query,
    .event_sync = cuda_event_sync,
    .event_elapsed_ms = cuda_event_elapsed_ms,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .mem_decommit = sp__cuda_mem_decommit,
    .mem_commit = sp__cuda_mem_commit,
    .graph_capture_begin = sp__cuda_graph_capture_begin,
    .graph_capture_end = sp__cuda_graph_capture_end,
    .graph_launch = sp__cuda_graph_launch,
    .graph_destroy = sp__cuda_graph_destroy,
    .host_alloc_pinned = sp__cuda_host_alloc_pinned,
    .host_free_pinned = sp__cuda_host_free_pinned,
    .memcpy_peer_async = sp__cuda_memcpy_peer_async,
    .stream_native = cuda_stream_native,
    .stream_wait_native = cuda_stream_wait_native,
    .mem_is_foreign = cuda_mem_is_foreign,
    .resident_open = sp__cuda_resident_open,
    .resident_run = sp__cuda_resident_run,
    .resident_launches = sp__cuda_resident_launches,
    .resident_close = sp__cuda_resident_close,
};
