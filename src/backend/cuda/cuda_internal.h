/* The CUDA backend's private types and helpers (only src/backend/cuda includes this header).
 *
 * Objects: a device (an ordinal and its name), a stream (a non-blocking cudaStream_t plus, once a
 * linear op has run on it, a cuBLASLt handle, a workspace and a cache of matmul plans) and an
 * event (a cudaEvent_t and whether it times). Every slot first makes the object's device current
 * on the calling thread (cuda_use_device), so any thread may call any slot.
 */
#ifndef SP_BACKEND_CUDA_INTERNAL_H
#define SP_BACKEND_CUDA_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"
/* The module cannot reach the core's witness (backend/module.h): its locks are ranked, not
 * witnessed (core/lock.h). */
#define SP_LOCK_NO_WITNESS 1
#include "core/lock.h"
#include "core/status.h"
#include "cuda_convert.h"

enum {
  SP__CUDA_PLAN_SLOTS = 256,   /* matmul plans cached per stream (hash table)  */
  SP__CUDA_PLAN_PROBE = 8,     /* linear probes before evicting the home slot  */
  SP__CUDA_CHOICE_SLOTS = 512, /* timed linear choices cached per device       */
};

/* Which implementation runs a linear op (STREAMPOOL_CUDA_LINEAR, read at device_open). */
typedef enum sp__cuda_linear_mode {
  SP__CUDA_LINEAR_AUTO = 0,     /* "auto": the faster of the two, timed once per shape        */
  SP__CUDA_LINEAR_CUBLASLT = 1, /* "cublaslt": cuBLASLt always                                */
  SP__CUDA_LINEAR_KERNEL = 2,   /* "kernel": our GEMV kernel always (cuda_gemv.cu)             */
} sp__cuda_linear_mode;
#define SP__CUDA_WORKSPACE_BYTES ((size_t)4 << 20) /* cuBLASLt workspace per stream          */

struct sp__bdevice {
  int ordinal;                 /* CUDA device index; immutable                               */
  char name[256];              /* cudaDeviceProp.name; immutable                             */
  sp__cuda_linear_mode linear; /* STREAMPOOL_CUDA_LINEAR at open; immutable                  */
  bool pdl;                    /* our kernels launch with PDL (cuda_pdl.h): compute capability
                                  9.0+ and STREAMPOOL_CUDA_PDL not 0; immutable              */
  bool clusters;               /* thread-block clusters for our kernels (cuda_gemv.cu's split
                                  kernel): compute capability 9.0+ and kernels built for it;
                                  immutable                                                  */
  bool pages;                  /* segments of whole 2 MiB pages are mapped page by page
                                  (cuda_vmm.c): STREAMPOOL_CUDA_PAGES not 0 and the device and
                                  driver can; immutable                                      */
  sp__mutex choice_mu;         /* guards the two arrays below (rank CUDA_CHOICE)             */
  uint64_t choice_key[SP__CUDA_CHOICE_SLOTS];  /* cuda_linear.c plan key; 0 = empty             */
  unsigned char choice[SP__CUDA_CHOICE_SLOTS]; /* sp__cuda_impl timed for that key             */
};

/* A linear op's implementation; SP__CUDA_IMPL_NONE = not decided (yet). */
typedef enum sp__cuda_impl {
  SP__CUDA_IMPL_NONE = 0,
  SP__CUDA_IMPL_CUBLASLT = 1,
  SP__CUDA_IMPL_KERNEL = 2,
} sp__cuda_impl;

/* One cached cublasLtMatmul configuration: everything but the pointers. */
typedef struct sp__cuda_plan {
  uint64_t key;                      /* cuda_plan_key(); 0 = empty slot                     */
  cublasLtMatmulDesc_t desc;         /* op, compute type, epilogue, bias type                */
  cublasLtMatrixLayout_t a, b, c;    /* w (op T), x, y                                        */
  cublasLtMatmulAlgo_t algo;         /* the heuristic's first choice                         */
  size_t workspace_bytes;            /* what algo needs (<= SP__CUDA_WORKSPACE_BYTES)        */
  bool bias;                         /* the epilogue adds a bias (its pointer is set per call) */
  unsigned char impl[SP__ACT_COUNT]; /* per activation: sp__cuda_impl copied from the device's
                                        choice, or NONE (auto mode, single-matmul ops only)  */
} sp__cuda_plan;

struct sp__bstream {
  sp__bdevice *dev;     /* owner; immutable                                              */
  cudaStream_t stream;  /* non-blocking; immutable                                       */
  sp__mutex lt_mu;      /* guards the fields below and the plans' descriptors            */
  cublasLtHandle_t lt;  /* NULL until the first linear op on this stream                 */
  void *workspace;      /* SP__CUDA_WORKSPACE_BYTES of device memory, with lt            */
  sp__cuda_plan *plans; /* [SP__CUDA_PLAN_SLOTS], with lt                                */
};

struct sp__bevent {
  sp__bdevice *dev; /* owner; immutable                       */
  cudaEvent_t ev;   /* immutable                              */
  bool timing;      /* created without cudaEventDisableTiming */
};

/* Turns a CUDA error into SP_ERR_OUT_OF_MEMORY (allocation failures) or SP_ERR_BACKEND with the
 * CUDA name and text, clearing the runtime's (non-sticky) last error. */
sp_status sp__cuda_fail(cudaError_t e, const char *what);

/* Makes d's device current on this thread. */
sp_status sp__cuda_use_device(const sp__bdevice *d);

/* Reads STREAMPOOL_CUDA_LINEAR into d->linear and sets up its choice table (device_open);
 * SP_ERR_INVALID_ARGUMENT for a bad value. sp__cuda_linear_device_fini undoes it. */
sp_status sp__cuda_linear_device_init(sp__bdevice *d);
void sp__cuda_linear_device_fini(sp__bdevice *d);

/* The linear slot (cuda_linear.c) and the teardown of a stream's cuBLASLt state. */
sp_status sp__cuda_linear_async(sp__bstream *s, const sp__linear *op);
/* The linear_f32_io_rows slot: SP__CUDA_F32_IO_ROWS, or 0 when d forces cuBLASLt. */
unsigned sp__cuda_linear_f32_io_rows(sp__bdevice *d);
void sp__cuda_linear_release(sp__bstream *s);
/* Creates s's cuBLASLt handle, workspace and plan table now if not yet done (graph capture calls
 * it first, so no cudaMalloc happens inside a capture). */
sp_status sp__cuda_linear_prepare(sp__bstream *s);

/* Segments mapped page by page (cuda_vmm.c). alloc: *out NULL (and SP_OK) where such a segment
 * cannot be made, so the caller cudaMallocs; free: false if p is not one (the caller cudaFrees). */
bool sp__cuda_vmm_usable(int ordinal); /* the driver's calls, the device's support, 2 MiB pages */
sp_status sp__cuda_vmm_alloc(sp__bdevice *d, size_t bytes, void **out);
bool sp__cuda_vmm_free(void *p);
sp_status sp__cuda_mem_decommit(sp__bdevice *d, void *segment, size_t offset, size_t bytes);
sp_status sp__cuda_mem_commit(sp__bdevice *d, void *segment, size_t offset, size_t bytes);

/* The resident forward slots (cuda_resident.c). */
sp_status sp__cuda_resident_open(sp__bdevice *d, const sp__resident_desc *desc,
                                 sp__bresident **out);
sp_status sp__cuda_resident_run(sp__bresident *r, const float *in, float *out);
uint64_t sp__cuda_resident_launches(const sp__bresident *r);
void sp__cuda_resident_close(sp__bresident *r);

/* The graph and pinned host memory slots (cuda_graph.c). */
sp_status sp__cuda_graph_capture_begin(sp__bstream *s);
sp_status sp__cuda_graph_capture_end(sp__bstream *s, sp__bgraph **out);
sp_status sp__cuda_graph_launch(sp__bgraph *g, sp__bstream *s);
void sp__cuda_graph_destroy(sp__bgraph *g);
sp_status sp__cuda_host_alloc_pinned(sp__bdevice *d, size_t bytes, void **out);
sp_status sp__cuda_host_free_pinned(sp__bdevice *d, void *p);

/* Peer access and copies (cuda_peer.c): open enables access to and from the other open devices
 * where possible (never fails); close forgets the device. */
void sp__cuda_peer_open(sp__bdevice *d);
void sp__cuda_peer_close(sp__bdevice *d);
sp_status sp__cuda_memcpy_peer_async(sp__bstream *dst_stream, void *dst, sp__bdevice *src_dev,
                                     const void *src, size_t bytes);

#endif /* SP_BACKEND_CUDA_INTERNAL_H */
