/* The CUDA backend's resident forwards (backend.h resident_*): the host side of the kernel in
 * cuda_resident.cu (protocol: cuda_resident.h).
 *
 * Owns: sp__bresident: its stream (non-blocking), the control block (mapped host memory), the
 * device words and the layers' output buffers (one cudaMalloc), and the launch state. Open checks
 * that the device can hold the model (cooperative launch, mapped host memory, each block's rows of
 * every layer's weights plus one staged input in the shared memory a block may have) and
 * refuses with SP_ERR_UNSUPPORTED saying what does not fit; it launches nothing. The first run
 * launches the kernel; a run that finds the kernel gone (it leaves after idle or its lease,
 * cuda_resident.h) launches it again.
 *
 * Waiting: a run polls `done` in host memory; every SPIN_CHECK polls it queries the stream. A
 * launch that ended without the forward either left (its number in `gone`: launch again) or
 * failed (a device fault, a barrier timeout). A failure, or no answer within RUN_TIMEOUT_S,
 * breaks the resident: every later run returns the same SP_ERR_BACKEND until it is closed.
 *
 * Invariants: at most one launch of a resident is in flight (a relaunch waits for the one before);
 * r->bell is the last value written to the bell; the kernel's `last` is the value it starts from.
 * Locking: none; the core serializes the runs of one resident (sp_resident, src/infer/resident.c).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cuda_internal.h"
#include "cuda_resident.h"

enum {
  RESIDENT_LEASE_MS = 10,      /* a launch leaves at its first wait after this long          */
  RESIDENT_WAIT_S = 2,         /* a grid barrier waits this long before it fails the launch  */
  RESIDENT_RUN_TIMEOUT_S = 10, /* a run waits this long for its answer                       */
  RESIDENT_SPIN_CHECK = 1024,  /* polls of `done` between looks at `gone` and the stream     */
};

struct sp__bresident {
  sp__bdevice *dev;               /* owner; immutable                                        */
  cudaStream_t stream;            /* the kernel's; immutable                                 */
  const void *fn;                 /* the kernel for the dtype; immutable                     */
  unsigned grid;                  /* blocks: the multiprocessors; immutable                  */
  size_t smem;                    /* dynamic shared memory a block; immutable                */
  sp__cuda_resident_args args;    /* layers, pointers, timings; the per-launch fields change */
  sp__cuda_resident_ctl *ctl;     /* host address of the control block                        */
  sp__cuda_resident_words *words; /* device, then the layers' outputs (one allocation)     */
  const float *in;                /* the pointers the kernel has (sent with the last bell)   */
  float *out;
  unsigned seq;      /* forwards rung                                           */
  unsigned bell;     /* the last bell value written                             */
  unsigned launch;   /* the last launch's number                                */
  uint64_t launches; /* launches so far                                          */
  bool running;      /* a launch is in flight (it may be leaving)               */
  bool broken;       /* a run failed: every later run fails with `why`          */
  char why[256];
};

static double resident_now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static sp_status resident_break(sp__bresident *r, const char *what, cudaError_t e) {
  r->broken = true;
  if (e != cudaSuccess)
    snprintf(r->why, sizeof(r->why), "%s: %s (%s)", what, cudaGetErrorString(e),
             cudaGetErrorName(e));
  else snprintf(r->why, sizeof(r->why), "%s", what);
  (void)cudaGetLastError();
  return sp__fail(SP_ERR_BACKEND, "cuda resident_run: %s", r->why);
}

/* ---- open ------------------------------------------------------------------------------- */

/* The layout: rows a block takes of each layer, where they lie in shared memory, the staged input
 * after them; r->smem the total. */
static void resident_layout(sp__bresident *r, const sp__resident_desc *desc) {
  size_t es = desc->dtype == SP_F32 ? 4 : 2, per16 = 16 / es, off = 0, x_max = 0;
  r->args.n_layers = desc->n_layers;
  for (unsigned l = 0; l < desc->n_layers; l++) {
    const sp__resident_layer *d = &desc->layers[l];
    sp__cuda_resident_layer *L = &r->args.layer[l];
    L->w = d->w;
    L->bias = d->bias;
    L->in = d->in;
    L->out = d->out;
    L->in_pad = (unsigned)((d->in + per16 - 1) / per16 * per16);
    L->rows = (d->out + r->grid - 1) / r->grid;
    L->smem_off = (unsigned)off;
    L->act = (int)d->act;
    off += (size_t)L->rows * L->in_pad * es;
    if (L->in_pad > x_max) x_max = L->in_pad;
  }
  r->args.x_off = (unsigned)off;
  r->smem = off + x_max * es;
}

/* The words and every layer's output but the last's, each 256-byte aligned, zeroed. */
static sp_status resident_buffers(sp__bresident *r, const sp__resident_desc *desc) {
  size_t es = desc->dtype == SP_F32 ? 4 : 2, total = 256, offs[SP__RESIDENT_LAYERS_MAX] = {0};
  for (unsigned l = 0; l + 1 < desc->n_layers; l++) {
    offs[l] = total;
    total += (r->args.layer[l + 1].in_pad * es + 255) / 256 * 256;
  }
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, total);
  if (e != cudaSuccess) return sp__cuda_fail(e, "resident_open: cudaMalloc");
  e = cudaMemset(p, 0, total);
  if (e != cudaSuccess) {
    cudaFree(p);
    return sp__cuda_fail(e, "resident_open: cudaMemset");
  }
  r->words = p;
  for (unsigned l = 0; l + 1 < desc->n_layers; l++)
    r->args.layer[l].y = (unsigned char *)p + offs[l];
  return SP_OK;
}

/* Whether d can run the kernel at all and hold this layout: SP_OK or SP_ERR_UNSUPPORTED. The
 * kernel's dynamic shared memory limit is a property of the function, shared by every resident of
 * the dtype: it is set to the most the device allows (the same value from every open, so opens
 * of other sizes, concurrent or later, never lower it under a resident that needs more). */
static sp_status resident_fits(sp__bresident *r) {
  int ord = r->dev->ordinal, coop = 0, mapped = 0, optin = 0, per_sm = 0;
  cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, ord);
  cudaDeviceGetAttribute(&mapped, cudaDevAttrCanMapHostMemory, ord);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ord);
  (void)cudaGetLastError();
  if (!coop || !mapped)
    return sp__fail(SP_ERR_UNSUPPORTED, "cuda resident_open: %s has no %s", r->dev->name,
                    !coop ? "cooperative launch" : "mapped host memory");
  struct cudaFuncAttributes fa;
  cudaError_t e = cudaFuncGetAttributes(&fa, r->fn);
  size_t most = e == cudaSuccess && (size_t)optin > fa.sharedSizeBytes
                    ? (size_t)optin - fa.sharedSizeBytes
                    : 0;
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(r->fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)most);
  if (e == cudaSuccess && r->smem <= most)
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, r->fn, 32 * SP__CUDA_RESIDENT_WARPS,
                                                      r->smem);
  if (r->smem > most || e != cudaSuccess || per_sm < 1) {
    (void)cudaGetLastError();
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "cuda resident_open: the model needs %zu bytes of shared memory a block (its "
                    "weights split over %u multiprocessors, plus one layer input); %s gives at "
                    "most %zu",
                    r->smem, r->grid, r->dev->name, most);
  }
  return SP_OK;
}

sp_status sp__cuda_resident_open(sp__bdevice *d, const sp__resident_desc *desc,
                                 sp__bresident **out) {
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  sp__bresident *r = sp__calloc(1, sizeof(*r));
  if (!r) return sp__fail(SP_ERR_HOST_MEMORY, "cuda resident_open: out of host memory");
  void *ctl = NULL, *ctl_dev = NULL;
  cudaError_t e;
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, d->ordinal);
  r->dev = d;
  r->grid = sms > 0 ? (unsigned)sms : 1u;
  r->fn = sp__cuda_resident_kernel((int)desc->dtype);
  r->args.idle_ns = (unsigned long long)desc->idle_us * 1000ull;
  r->args.lease_ns = (unsigned long long)RESIDENT_LEASE_MS * 1000000ull;
  r->args.wait_ns = (unsigned long long)RESIDENT_WAIT_S * 1000000000ull;
  resident_layout(r, desc);
  st = resident_fits(r);
  if (st != SP_OK) goto fail_free;
  e = cudaHostAlloc(&ctl, sizeof(sp__cuda_resident_ctl),
                    cudaHostAllocMapped | cudaHostAllocPortable);
  if (e == cudaSuccess) e = cudaHostGetDevicePointer(&ctl_dev, ctl, 0);
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "resident_open: mapped host memory");
    goto fail_ctl;
  }
  memset(ctl, 0, sizeof(sp__cuda_resident_ctl));
  r->ctl = ctl;
  r->args.ctl = ctl_dev;
  st = resident_buffers(r, desc);
  if (st != SP_OK) goto fail_ctl;
  r->args.words = r->words;
  e = cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    st = sp__cuda_fail(e, "resident_open: cudaStreamCreate");
    goto fail_buffers;
  }
  *out = r;
  return SP_OK;
fail_buffers:
  cudaFree(r->words);
fail_ctl:
  if (ctl) cudaFreeHost(ctl);
fail_free:
  sp__free(r);
  return st;
}

/* ---- run -------------------------------------------------------------------------------- */

/* Waits for the launch in flight to end (it is leaving or has left). */
static sp_status resident_join(sp__bresident *r) {
  if (!r->running) return SP_OK;
  r->running = false;
  cudaError_t e = cudaStreamSynchronize(r->stream);
  if (e != cudaSuccess) return resident_break(r, "the resident kernel failed", e);
  return SP_OK;
}

/* A new launch that starts after bell value `last` (the one before the forward to run). */
static sp_status resident_start(sp__bresident *r, unsigned last) {
  sp_status st = resident_join(r);
  if (st != SP_OK) return st;
  sp__cuda_resident_words w = {.go = last, .in = r->in, .out = r->out};
  r->args.last = last;
  r->args.launch = ++r->launch;
  r->args.in = r->in;
  r->args.out = r->out;
  cudaError_t e = cudaMemcpyAsync(r->words, &w, sizeof(w), cudaMemcpyHostToDevice, r->stream);
  if (e == cudaSuccess) e = sp__cuda_resident_launch(r->fn, &r->args, r->grid, r->smem, r->stream);
  if (e != cudaSuccess) return resident_break(r, "launching the resident kernel", e);
  r->running = true;
  r->launches++;
  return SP_OK;
}

/* The ended launch's fail word into *fail (1: a grid barrier timed out; a launch that was leaving
 * may have been running a last forward when it did). */
static cudaError_t resident_read_fail(sp__bresident *r, unsigned *fail) {
  return cudaMemcpy(fail, &r->words->fail, sizeof(*fail), cudaMemcpyDeviceToHost);
}

/* The launch in flight ended without `done` reaching bell and without having left: why (e: the
 * launch's or the fail word's read's error; fail: the fail word), as a broken resident. */
static sp_status resident_lost(sp__bresident *r, cudaError_t e, unsigned fail) {
  if (e != cudaSuccess) return resident_break(r, "the resident kernel failed", e);
  return resident_break(r,
                        fail ? "the resident kernel stopped: a grid barrier timed out (a block was "
                               "not running)"
                             : "the resident kernel stopped without answering",
                        cudaSuccess);
}

/* Polls for done == r->bell. Every RESIDENT_SPIN_CHECK polls it asks whether the launch has
 * ended: having left without this forward (gone), it is launched again; otherwise it failed. */
static sp_status resident_wait(sp__bresident *r, unsigned before) {
  const double t0 = resident_now_s();
  for (unsigned spins = 1;; spins++) {
    if (r->ctl->done == r->bell) return SP_OK;
    if (spins % RESIDENT_SPIN_CHECK) continue;
    cudaError_t q = cudaStreamQuery(r->stream);
    if (q == cudaErrorNotReady) {
      if (resident_now_s() - t0 > RESIDENT_RUN_TIMEOUT_S)
        return resident_break(r, "no answer from the resident kernel in 10 s", cudaSuccess);
      continue;
    }
    r->running = false; /* the launch has ended */
    if (r->ctl->done == r->bell) return SP_OK;
    unsigned fail = 0;
    cudaError_t e = q == cudaSuccess ? resident_read_fail(r, &fail) : q;
    if (e != cudaSuccess || fail || r->ctl->gone != r->launch) return resident_lost(r, e, fail);
    sp_status st = resident_start(r, before); /* it left before it saw the bell */
    if (st != SP_OK) return st;
  }
}

sp_status sp__cuda_resident_run(sp__bresident *r, const float *in, float *out) {
  if (r->broken)
    return sp__fail(SP_ERR_BACKEND, "cuda resident_run: %s (an earlier run; close it)", r->why);
  sp_status st = sp__cuda_use_device(r->dev);
  if (st != SP_OK) return st;
  unsigned changed = in != r->in || out != r->out;
  if (changed) {
    r->ctl->in = in;
    r->ctl->out = out;
    r->in = in;
    r->out = out;
  }
  const unsigned before = r->bell;
  if (!r->running || r->ctl->gone == r->launch) {
    st = resident_start(r, before);
    if (st != SP_OK) return st;
  }
  unsigned v;
  do v = (++r->seq << 1) | changed;
  while (v == SP__CUDA_RESIDENT_STOP || v == before);
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the pointers before the bell */
  r->ctl->bell = v;
  r->bell = v;
  return resident_wait(r, before);
}

uint64_t sp__cuda_resident_launches(const sp__bresident *r) { return r->launches; }

/* ---- close ------------------------------------------------------------------------------ */

void sp__cuda_resident_close(sp__bresident *r) {
  if (!r) return;
  (void)sp__cuda_use_device(r->dev);
  if (r->running) {
    r->ctl->bell = SP__CUDA_RESIDENT_STOP;
    (void)cudaStreamSynchronize(r->stream);
  }
  (void)cudaStreamDestroy(r->stream);
  (void)cudaFree(r->words);
  (void)cudaFreeHost(r->ctl);
  (void)cudaGetLastError();
  sp__free(r);
}
