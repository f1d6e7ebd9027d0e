/* The host backend's objects, shared by its files (internal to src/backend/host).
 *
 * A device is the CPU with a memory budget. A stream is a worker thread draining a FIFO ring of
 * commands; its two monotonic counters say how far it is: `submitted` (commands queued so far) and
 * `completed` (commands finished, in FIFO order, so completed <= submitted and command number n,
 * counting from 1, is done exactly when completed >= n). Events are (stream, target) marks on
 * those counters.
 *
 * Locks (ranks in src/core/lock.h, the event's below the stream's):
 *   sp__bevent.mu   event mark; held while a timing event's marker is queued (takes a stream's mu)
 *   sp__bstream.mu  the FIFO ring, the worker's sleep/stop flags, the async error, the capture
 * Every table slot the core calls asserts (SP_DEBUG >= 1) that its caller holds no lock under which
 * backend calls are not made (sp__lock_assert_call_ok). The worker holds no lock while it runs a
 * command (jitter sleep, copy, host function, GEMM, or a wait on another stream's counter), so a
 * host function may submit to or sync other streams.
 */
#ifndef SP_BACKEND_HOST_IMPL_H
#define SP_BACKEND_HOST_IMPL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "core/lock.h"
#include "core/status.h"

enum { SP__HOST_ALIGN = 256 };             /* device-memory alignment, bytes       */
enum { SP__HOST_DEVICES_MAX = 16 };        /* STREAMPOOL_HOST_DEVICES upper bound  */
enum { SP__HOST_JITTER_US_MAX = 1000000 }; /* STREAMPOOL_HOST_JITTER_US bound     */

struct sp__bdevice {
  int index;                /* ordinal; immutable                                     */
  char name[64];            /* "host (N cores)"; immutable                            */
  size_t total_bytes;       /* capacity (STREAMPOOL_HOST_MEMORY or RAM); immutable    */
  atomic_size_t used_bytes; /* committed bytes of live segments (mem_alloc .. mem_free) */
  unsigned jitter_us;       /* max random delay before each command; immutable        */
  uint64_t jitter_seed;     /* STREAMPOOL_HOST_JITTER_SEED; immutable                 */
};

typedef enum sp__host_cmd_kind {
  SP__HOST_CMD_MEMCPY,
  SP__HOST_CMD_MEMSET,
  SP__HOST_CMD_FUNC,
  SP__HOST_CMD_MARKER, /* timestamps a timing event's record              */
  SP__HOST_CMD_WAIT,   /* blocks until another stream's completed >= target */
  SP__HOST_CMD_LINEAR,
  SP__HOST_CMD_CONVERT,
  SP__HOST_CMD_NN, /* an encoder layer op (host_nn.c) */
} sp__host_cmd_kind;

/* One queued command; copied into the ring on submission and out of it by the worker. */
typedef struct sp__host_cmd {
  sp__host_cmd_kind kind;
  union {
    struct {
      void *dst;
      const void *src;
      size_t bytes;
    } copy;
    struct {
      void *dst;
      int value;
      size_t bytes;
    } set;
    struct {
      void (*fn)(void *);
      void *arg;
    } func;
    struct {
      sp__bevent *event;
      uint64_t gen;
    } marker; /* holds one event reference */
    struct {
      sp__bstream *other;
      uint64_t target;
    } wait;
    sp__linear linear;
    struct {
      void *dst;
      const void *src;
      sp_dtype dst_type, src_type;
      size_t n;
    } convert;
    sp__nn nn;
  } u;
} sp__host_cmd;

struct sp__bstream {
  sp__bdevice *dev;           /* immutable                                              */
  unsigned index;             /* pool index given at creation; immutable                */
  pthread_t thread;           /* the worker; immutable after create                     */
  sp__mutex mu;               /* SP__RANK_HOST_STREAM                                   */
  pthread_cond_t work_cv;     /* mu: the worker sleeps here when the ring is empty      */
  pthread_cond_t done_cv;     /* mu: syncs and waits sleep here for `completed`         */
  sp__host_cmd *ring;         /* mu: capacity `cap` (a power of two)                    */
  uint64_t cap;               /* mu: ring slots                                         */
  uint64_t head;              /* mu: commands taken by the worker so far                */
  _Atomic uint64_t submitted; /* written under mu; command n sits at ring[(n-1)&(cap-1)] */
  _Atomic uint64_t completed; /* written by the worker only, after a command finished   */
  atomic_uint waiters;        /* threads sleeping (or about to) on done_cv              */
  bool sleeping;              /* mu: the worker waits on work_cv                        */
  bool stopping;              /* mu: destroy asked; the worker drains then exits        */
  sp_status async_error;      /* mu: first failure of a command since the last sync     */
  char async_msg[200];        /* mu: its message                                        */
  /* Capture (host_graph.c): while `capturing`, the capturing thread's submissions are recorded
   * into rec instead of the ring; anything else the contract forbids breaks the capture. */
  atomic_bool capturing;    /* written under mu; read without it by sync/query checks */
  pthread_t capture_thread; /* mu: the thread that began the capture                  */
  sp__host_cmd *rec;        /* mu: the recorded commands, rec_cap slots               */
  size_t rec_n, rec_cap;    /* mu: commands recorded, capacity                        */
  sp_status rec_error;      /* mu: why the capture is broken, or SP_OK                */
  char rec_msg[160];        /* mu: its message                                        */
  /* The worker's own state (no lock: only the worker touches it). */
  uint64_t rng;          /* jitter RNG state (xorshift64*)                         */
  float *scratch;        /* 16-bit linear: x, w, y as f32; nn ops: rows as f32    */
  size_t scratch_floats; /* scratch capacity, floats                               */
};

struct sp__bevent {
  sp__bdevice *dev;              /* immutable                                            */
  unsigned flags;                /* SP_EVENT_*; immutable                                */
  atomic_uint refs;              /* 1 for the owner + 1 per queued marker                */
  sp__mutex mu;                  /* SP__RANK_HOST_EVENT                                  */
  _Atomic uint64_t seq;          /* the mark's seqlock: odd while a record rewrites it   */
  _Atomic(sp__bstream *) stream; /* mark: last recorded on; NULL if never                */
  _Atomic uint64_t target;       /* mark: done when stream->completed >= target          */
  uint64_t gen;                  /* mu: timing records so far (a marker stamps its own)  */
  uint64_t stamp_ns;             /* mu: CLOCK_MONOTONIC when the current marker ran      */
  bool stamped;                  /* mu: stamp_ns belongs to the current record           */
};

/* ---- host_stream.c ---- */
/* Queues *cmd on s; on success *seq (may be NULL) is its number (done when completed >= seq).
 * While s is being captured the capturing thread's command is recorded instead (seq must be
 * NULL) and another thread's is refused (a broken capture contract). */
sp_status sp__host_submit(sp__bstream *s, const sp__host_cmd *cmd, uint64_t *seq);
/* Queues cmds[0, n) on s as one unit: no other submission lands between them. Otherwise as
 * sp__host_submit (seq not given). */
sp_status sp__host_submit_n(sp__bstream *s, const sp__host_cmd *cmds, size_t n);
/* Blocks until s->completed >= target. No lock of the caller's may be held. */
void sp__host_wait_completed(sp__bstream *s, uint64_t target);
static inline uint64_t sp__host_completed(sp__bstream *s) {
  return atomic_load_explicit(&s->completed, memory_order_acquire);
}

/* ---- host_graph.c ---- */
/* Records cmds[0, n) into s's capture (mu held, s->capturing): from the capturing thread they are
 * appended; from another thread the capture contract is broken (see below). */
sp_status sp__host_capture_record_locked(sp__bstream *s, const sp__host_cmd *cmds, size_t n);
/* Whether s is being captured (any thread may ask; exact for the capturing thread). */
static inline bool sp__host_capturing(sp__bstream *s) {
  return atomic_load_explicit(&s->capturing, memory_order_acquire);
}
/* The stream the calling thread is capturing, or NULL. */
sp__bstream *sp__host_capture_of_thread(void);
/* A call the capture contract of backend.h forbids: in debug builds an assertion failure naming
 * `what` (aborts); otherwise s's capture (s may be NULL) is marked broken, so capture_end fails,
 * and the call returns SP_ERR_BACKEND saying what. `fn` names the slot. */
sp_status sp__host_capture_violation(sp__bstream *s, const char *fn, const char *what,
                                     const char *file, int line);
#define SP__HOST_CAPTURE_VIOLATION(s, fn, what) \
  sp__host_capture_violation((s), (fn), (what), __FILE__, __LINE__)
/* The same with s->mu held (s is being captured). */
sp_status sp__host_capture_violation_locked(sp__bstream *s, const char *fn, const char *what,
                                            const char *file, int line);
/* Drops a capture left open when s is destroyed (mu not held; s->worker gone). */
void sp__host_capture_discard(sp__bstream *s);

/* ---- host_event.c ---- */
void sp__host_marker_run(sp__bevent *e, uint64_t gen); /* stamps, then drops the marker's ref */

/* ---- host_math.c ---- */
/* Validates a linear op / a conversion at submission (SP_OK or SP_ERR_INVALID_ARGUMENT). */
sp_status sp__host_linear_check(const sp__linear *op, const char *fn);
unsigned sp__host_linear_f32_io_rows(sp__bdevice *d); /* 2: both paths run in CI */
sp_status sp__host_convert_check(void *dst, sp_dtype dst_type, const void *src, sp_dtype src_type,
                                 size_t n, const char *fn);
/* Run on the worker; on failure they return a status with the message in msg. */
sp_status sp__host_linear_run(sp__bstream *s, const sp__linear *op, char *msg, size_t msg_size);
void sp__host_convert_run(void *dst, sp_dtype dst_type, const void *src, sp_dtype src_type,
                          size_t n);
/* Once per process, before the first GEMM: one BLAS thread per call. */
void sp__host_blas_init(void);
/* Applies act to y[0, n) in place (the Linear epilogue). */
void sp__host_act(float *y, size_t n, sp__act act);
/* Makes the worker's scratch hold at least floats (worker only); false on host OOM. */
bool sp__host_scratch_reserve(sp__bstream *s, size_t floats);

/* ---- host_nn.c ---- */
/* Runs an encoder op (checked at submission by sp__nn_op_check) on the worker; on failure returns a
 * status with the message in msg. */
sp_status sp__host_nn_run(sp__bstream *s, const sp__nn *op, char *msg, size_t msg_size);

/* ---- host_device.c ---- */
sp_status sp__host_device_count(int *count);
sp_status sp__host_device_open(int index, sp__bdevice **out);
void sp__host_device_close(sp__bdevice *d);
const char *sp__host_device_name(const sp__bdevice *d);
sp_status sp__host_memory_info(sp__bdevice *d, size_t *free_bytes, size_t *total_bytes);
sp_status sp__host_mem_alloc(sp__bdevice *d, size_t bytes, void **out);
sp_status sp__host_mem_free(sp__bdevice *d, void *p);
sp_status sp__host_mem_decommit(sp__bdevice *d, void *segment, size_t offset, size_t bytes);
sp_status sp__host_mem_commit(sp__bdevice *d, void *segment, size_t offset, size_t bytes);

/* ---- host_stream.c: table slots ---- */
sp_status sp__host_stream_create(sp__bdevice *d, unsigned index, sp__bstream **out);
void sp__host_stream_destroy(sp__bstream *s);
sp_status sp__host_stream_query(sp__bstream *s);
sp_status sp__host_stream_sync(sp__bstream *s);
sp_status sp__host_memcpy_async(sp__bstream *s, void *dst, const void *src, size_t bytes);
sp_status sp__host_memset_async(sp__bstream *s, void *dst, int value, size_t bytes);
sp_status sp__host_host_func(sp__bstream *s, void (*fn)(void *), void *arg);
sp_status sp__host_linear_async(sp__bstream *s, const sp__linear *op);
sp_status sp__host_convert_async(sp__bstream *s, void *dst, sp_dtype dst_type, const void *src,
                                 sp_dtype src_type, size_t n);
sp_status sp__host_nn_async(sp__bstream *s, const sp__nn *op);

/* ---- host_resident.c: table slots ---- */
sp_status sp__host_resident_open(sp__bdevice *d, const sp__resident_desc *desc,
                                 sp__bresident **out);
sp_status sp__host_resident_run(sp__bresident *r, const float *in, float *out);
uint64_t sp__host_resident_launches(const sp__bresident *r);
void sp__host_resident_close(sp__bresident *r);

/* ---- host_peer.c: table slot ---- */
sp_status sp__host_memcpy_peer_async(sp__bstream *dst_stream, void *dst, sp__bdevice *src_dev,
                                     const void *src, size_t bytes);

/* ---- host_graph.c: table slots ---- */
sp_status sp__host_graph_capture_begin(sp__bstream *s);
sp_status sp__host_graph_capture_end(sp__bstream *s, sp__bgraph **out);
sp_status sp__host_graph_launch(sp__bgraph *g, sp__bstream *s);
void sp__host_graph_destroy(sp__bgraph *g);

/* ---- host_pinned.c: table slots ---- */
sp_status sp__host_alloc_pinned(sp__bdevice *d, size_t bytes, void **out);
sp_status sp__host_free_pinned(sp__bdevice *d, void *p);

/* ---- host_event.c: table slots ---- */
sp_status sp__host_event_create(sp__bdevice *d, unsigned flags, sp__bevent **out);
void sp__host_event_destroy(sp__bevent *e);
sp_status sp__host_event_record(sp__bevent *e, sp__bstream *s);
sp_status sp__host_stream_wait_event(sp__bstream *s, sp__bevent *e);
sp_status sp__host_event_query(sp__bevent *e);
sp_status sp__host_event_sync(sp__bevent *e);
sp_status sp__host_event_elapsed_ms(sp__bevent *start, sp__bevent *end, float *ms);

#endif /* SP_BACKEND_HOST_IMPL_H */
