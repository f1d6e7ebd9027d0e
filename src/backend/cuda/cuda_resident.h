/* The resident forward's kernel (cuda_resident.cu) and what it shares with the host side that
 * drives it (cuda_resident.c): the kernel's arguments, the control words in mapped host memory and
 * the words in device memory. Internal to src/backend/cuda.
 *
 * One cooperative launch, one block a multiprocessor (all resident at once), runs forwards until it
 * leaves. Each block holds, in shared memory, its rows of every layer's weights (loaded once a
 * launch). A forward: the host writes its number to the bell; block 0 sees it (the only block that
 * reads host memory while waiting) and copies it to `go` in device memory, where the others poll;
 * every block stages the layer's input in shared memory, computes its rows (a warp a row, the
 * summation order of cuda_gemv.cu at batch 1), and the blocks meet at a grid barrier before the
 * next layer; the last block to finish the last layer writes the number to `done`.
 *
 * Leaving: block 0 leaves while waiting for the bell, after idle_ns without a forward or lease_ns
 * after the launch, so the kernel never holds the device for long: a device-wide synchronizing
 * call of another thread (cudaFree, a module load) waits at most that long. It first writes its
 * launch number to `gone`, then reads the bell once more and runs a forward found there before it
 * leaves; the host, seeing `gone`, waits for the launch to end and, if its forward's number is not
 * in `done`, launches again. STOP in the bell (close) makes it leave at once.
 *
 * Numbers: a bell value is a forward's sequence number << 1 | 1 when the in/out pointers changed
 * (then block 0 reads them from the control block); consecutive forwards' values differ. A grid
 * barrier that waits longer than wait_ns sets `fail` and every block leaves: the host sees the
 * launch end without `done` and reports it.
 */
#ifndef SP_BACKEND_CUDA_RESIDENT_H
#define SP_BACKEND_CUDA_RESIDENT_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { SP__CUDA_RESIDENT_WARPS = 8 };      /* warps a block */
#define SP__CUDA_RESIDENT_STOP 0xffffffffu /* the bell value that stops the kernel (close) */

/* The control block, in mapped (page-locked, device-visible) host memory; one cache line a role. */
typedef struct sp__cuda_resident_ctl {
  volatile unsigned bell; /* host: the forward to run (the numbers above), or STOP */
  unsigned pad0[15];
  volatile unsigned done; /* device: the last forward finished                    */
  unsigned pad1[15];
  volatile unsigned gone; /* device: the launch that has left or is leaving        */
  unsigned pad2[15];
  const float *volatile in; /* host: the forward's pointers, read when the bell says so */
  float *volatile out;
  unsigned pad3[12];
} sp__cuda_resident_ctl;

/* Device memory the blocks share during a launch; set by the host before each launch. */
typedef struct sp__cuda_resident_words {
  unsigned long long go; /* block 0's copy of the bell, one word for one load: the forward's
                            value, | 1 << 32 when the launch leaves after that forward (value
                            unchanged: leave now); at launch: the last value                 */
  unsigned count;        /* grid-barrier arrivals of this launch, all blocks                   */
  unsigned fail;         /* 1: a barrier wait timed out; every block leaves                    */
  const float *in;       /* the forward's pointers, written before go when its value says they
                            changed (its low bit)                                             */
  float *out;
} sp__cuda_resident_words;

typedef struct sp__cuda_resident_layer {
  const void *w, *bias; /* device, [out, in] and [out] (bias NULL: none), the model dtype        */
  void *y;              /* device: the output in the dtype, zero-padded to a multiple of 16
                           bytes; NULL for the last layer (it writes the forward's f32 out)  */
  unsigned in, out;     /* features                                                          */
  unsigned in_pad;      /* in rounded up to a multiple of 16 bytes of elements               */
  unsigned rows;        /* rows of this layer a block computes (block b: b*rows ..)          */
  unsigned smem_off;    /* bytes: where the block's rows of w start in dynamic shared memory */
  int act;              /* sp__act, after the bias                                           */
} sp__cuda_resident_layer;

typedef struct sp__cuda_resident_args {
  sp__cuda_resident_layer layer[SP__RESIDENT_LAYERS_MAX];
  unsigned n_layers;
  unsigned x_off;             /* bytes: the staged layer input in dynamic shared memory */
  sp__cuda_resident_ctl *ctl; /* the control block, as the device addresses it         */
  sp__cuda_resident_words *words;
  const float *in; /* the pointers at launch (the host's last ones)          */
  float *out;
  unsigned last;   /* the bell value served before this launch               */
  unsigned launch; /* this launch's number (written to gone)                 */
  unsigned long long idle_ns, lease_ns, wait_ns;
} sp__cuda_resident_args;

/* The kernel for dtype (an sp_dtype), or NULL for another value. */
const void *sp__cuda_resident_kernel(int dtype);

/* Launches fn with a's arguments, cooperatively, grid blocks of SP__CUDA_RESIDENT_WARPS warps
 * with smem bytes of dynamic shared memory, on s. Returns the launch's own result. */
cudaError_t sp__cuda_resident_launch(const void *fn, const sp__cuda_resident_args *a, unsigned grid,
                                     size_t smem, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif /* SP_BACKEND_CUDA_RESIDENT_H */
