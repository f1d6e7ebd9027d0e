/* The CUDA backend's graph slots (capture a stream's work once, replay it with one launch) and its
 * pinned host memory slots.
 *
 * Owns: sp__bgraph (an instantiated cudaGraphExec_t and the device it belongs to). The cudaGraph_t
 * a capture produces is only a template: it is destroyed as soon as it has been instantiated, so
 * a live sp__bgraph holds exactly one driver object.
 *
 * Invariants: capture uses cudaStreamCaptureModeThreadLocal, so other threads may keep calling
 * cudaMalloc, syncing and launching on their own streams while one thread captures. Before a
 * capture begins, the stream's cuBLASLt state (handle, workspace, plan table) is created
 * (sp__cuda_linear_prepare), so a linear op submitted during capture never calls cudaMalloc;
 * graph_capture_end always leaves the stream out of capture mode, whatever failed. A graph bakes
 * in every pointer it was captured with, the capturing stream's matmul workspace included
 * (backend.h states what that asks of the caller).
 *
 * Locking: none. A stream is captured by one thread at a time (the caller's contract); the driver
 * serializes launches on a stream.
 */
#include "cuda_internal.h"

struct sp__bgraph {
  sp__bdevice *dev;     /* device of the captured stream; immutable */
  cudaGraphExec_t exec; /* instantiated graph; immutable            */
};

/* ---- graphs ------------------------------------------------------------------------------ */

sp_status sp__cuda_graph_capture_begin(sp__bstream *s) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  st = sp__cuda_linear_prepare(s); /* no cudaMalloc or cublasLtCreate inside the capture */
  if (st != SP_OK) return st;
  cudaError_t e = cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaStreamBeginCapture");
}

/* Instantiates g into a new sp__bgraph and uploads it to s's device, so the first launch costs
 * no more than the later ones. g stays the caller's. */
static sp_status cuda_graph_instantiate(sp__bstream *s, cudaGraph_t g, sp__bgraph **out) {
  sp__bgraph *bg = sp__calloc(1, sizeof(*bg));
  if (!bg) return sp__fail(SP_ERR_HOST_MEMORY, "cuda: graph_capture_end: out of host memory");
  bg->dev = s->dev;
  sp_status st;
  cudaError_t e = cudaGraphInstantiate(&bg->exec, g, 0);
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "cudaGraphInstantiate");
    goto fail_free;
  }
  e = cudaGraphUpload(bg->exec, s->stream);
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "cudaGraphUpload");
    goto fail_exec;
  }
  *out = bg;
  return SP_OK;
fail_exec:
  cudaGraphExecDestroy(bg->exec);
fail_free:
  sp__free(bg);
  return st;
}

sp_status sp__cuda_graph_capture_end(sp__bstream *s, sp__bgraph **out) {
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaGraph_t g = NULL;
  cudaError_t e = cudaStreamEndCapture(s->stream, &g); /* ends capture even when invalidated */
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "cudaStreamEndCapture");
    goto destroy_graph;
  }
  if (!g) {
    st = sp__fail(SP_ERR_BACKEND, "cuda: cudaStreamEndCapture returned no graph");
    goto destroy_graph;
  }
  sp__bgraph *bg = NULL;
  st = cuda_graph_instantiate(s, g, &bg);
  if (st == SP_OK) *out = bg;
destroy_graph:
  if (g) cudaGraphDestroy(g); /* the exec does not need its template */
  return st;
}

sp_status sp__cuda_graph_launch(sp__bgraph *g, sp__bstream *s) {
  sp_assert(g->dev == s->dev);
  sp_status st = sp__cuda_use_device(s->dev);
  if (st != SP_OK) return st;
  cudaError_t e = cudaGraphLaunch(g->exec, s->stream);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaGraphLaunch");
}

void sp__cuda_graph_destroy(sp__bgraph *g) {
  if (!g) return;
  /* An exec still in flight is freed by the driver when it completes. */
  if (sp__cuda_use_device(g->dev) == SP_OK) cudaGraphExecDestroy(g->exec);
  (void)cudaGetLastError();
  sp__free(g);
}

/* ---- pinned host memory ------------------------------------------------------------------ */

sp_status sp__cuda_host_alloc_pinned(sp__bdevice *d, size_t bytes, void **out) {
  if (bytes == 0) return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: host_alloc_pinned: 0 bytes");
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  void *p = NULL;
  cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return sp__fail(SP_ERR_HOST_MEMORY, "cuda: cudaHostAlloc(%zu bytes): %s", bytes,
                    cudaGetErrorString(e));
  }
  if (e != cudaSuccess) return sp__cuda_fail(e, "cudaHostAlloc");
  *out = p;
  return SP_OK;
}

sp_status sp__cuda_host_free_pinned(sp__bdevice *d, void *p) {
  if (!p) return SP_OK;
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  cudaError_t e = cudaFreeHost(p);
  return e == cudaSuccess ? SP_OK : sp__cuda_fail(e, "cudaFreeHost");
}
