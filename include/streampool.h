/* streampool: many threads, one GPU, safely and fast.
 *
 * The whole public contract of libstreampool. A *device* (a GPU, or the host CPU acting as one)
 * owns a pool of *streams*; each thread has a current stream per device; *events* mark points in
 * a stream; device memory comes from a stream-ordered caching allocator; models run on streams
 * and a *batcher* merges single-row requests from many threads into batched passes.
 *
 * Conventions (every function below follows them):
 *  - Every action returns sp_status. Out-parameters are written only on SP_OK.
 *  - On failure, sp_last_error() holds a message for this thread naming the problem.
 *  - Misuse detectable at the boundary (NULL, stale event, double free, foreign pointer, wrong
 *    device) returns an error and changes nothing.
 *  - The library never prints, never exits, never aborts on an operating error.
 *  - Thread safety is stated per function: "any thread", "owner thread" or
 *    "externally synchronized".
 *  - Config structs: all-zero means defaults.
 *  - Cancellation: a call that can block (syncs, sp_model_infer/forward/load, the batcher, a
 *    resident forward, an exclusive-slot wait, sp_device_close, sp_alloc when it must sync) runs
 *    with the calling thread's cancellation disabled and restores the caller's state on return,
 *    so pthread_cancel never leaves library state locked; a pending cancel acts at the caller's
 *    next cancellation point after the call returns. Asynchronous cancellation inside library
 *    calls is not supported.
 *  - Fork: in a child process, every call on an object the parent made returns SP_ERR_FORKED;
 *    sp_device_close, sp_model_free, sp_batcher_destroy and sp_resident_close only forget the
 *    object.
 */
#ifndef STREAMPOOL_H
#define STREAMPOOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared here is the library's exported API (it is built with hidden visibility). */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define SP_VERSION_MAJOR 0
#define SP_VERSION_MINOR 1
#define SP_VERSION_PATCH 0
/* The library's version as "MAJOR.MINOR.PATCH". Any thread. */
const char *sp_version(void);

/* ---------------------------------------------------------------------------------------------
 * Status and errors
 * ------------------------------------------------------------------------------------------- */

/* X-macro: name, value, description. The one table behind sp_status and sp_status_str. */
#define SP_STATUS_TABLE(X)                            \
  X(SP_OK, 0, "success")                              \
  X(SP_ERR_INVALID_ARGUMENT, -1, "invalid argument")  \
  X(SP_ERR_INVALID_HANDLE, -2, "invalid handle")      \
  X(SP_ERR_OUT_OF_MEMORY, -3, "out of device memory") \
  X(SP_ERR_LIMIT, -4, "memory limit reached")         \
  X(SP_ERR_POOL_EXHAUSTED, -5, "pool exhausted")      \
  X(SP_ERR_NOT_READY, -6, "not ready")                \
  X(SP_ERR_NO_DEVICE, -7, "no such device")           \
  X(SP_ERR_UNSUPPORTED, -8, "unsupported")            \
  X(SP_ERR_BACKEND, -9, "backend error")              \
  X(SP_ERR_FORKED, -10, "used after fork")            \
  X(SP_ERR_HOST_MEMORY, -11, "out of host memory")    \
  X(SP_ERR_BUSY, -12, "still in use")

typedef enum sp_status {
#define SP__STATUS_ENUM(name, value, text) name = value,
  SP_STATUS_TABLE(SP__STATUS_ENUM)
#undef SP__STATUS_ENUM
} sp_status;

/* A short, static description of s ("unknown status" for values outside the table). Never NULL.
 * Any thread. */
const char *sp_status_str(sp_status s);

/* This thread's last failure with detail, e.g. "sp_free: pointer 0x7f.. was not allocated by
 * this device". "" when no call on this thread has failed. Valid until this thread's next call
 * into the library. Never NULL. Any thread. */
const char *sp_last_error(void);

/* ---------------------------------------------------------------------------------------------
 * Logging and host-memory hooks (process-wide)
 * ------------------------------------------------------------------------------------------- */

typedef enum sp_log_level {
  SP_LOG_ERROR = 0,
  SP_LOG_WARN = 1,
  SP_LOG_INFO = 2,
  SP_LOG_DEBUG = 3,
} sp_log_level;

/* Called for each message at or above the level set; msg is valid only during the call. The hook
 * may run on any thread, including backend worker threads, and must not call back into the
 * library. */
typedef void (*sp_log_fn)(void *user, sp_log_level level, const char *msg);

/* Installs the log hook (NULL: messages are dropped, the default) and the most verbose level
 * delivered. Any thread; takes effect for messages that start after it returns. */
void sp_log_set_hook(sp_log_fn fn, void *user, sp_log_level max_level);

/* Where the library's own host memory (bookkeeping, not device memory) comes from. All three
 * functions must be set; free(NULL) must be accepted. malloc returning NULL makes the failing
 * call return SP_ERR_HOST_MEMORY; this is how tests inject host out-of-memory faults. */
typedef struct sp_host_allocator {
  void *(*malloc)(void *user, size_t bytes);
  void *(*calloc)(void *user, size_t count, size_t bytes);
  void (*free)(void *user, void *p);
  void *user;
} sp_host_allocator;

/* Installs a (NULL: the C library's). Set it before opening any device, or only to allocators
 * that can free each other's memory. Any thread. */
void sp_host_allocator_set(const sp_host_allocator *a);

/* ---------------------------------------------------------------------------------------------
 * Devices
 * ------------------------------------------------------------------------------------------- */

typedef struct sp_device sp_device;

/* An event handle: pooled, generation-checked. A handle whose event was released is stale: every
 * call taking it returns SP_ERR_INVALID_HANDLE and never acts on the recycled event. id 0 is
 * never a valid event. */
typedef struct sp_event {
  uint64_t id;
} sp_event;

typedef enum sp_stream_mode {
  SP_STREAMS_ROUND_ROBIN = 0, /* CUDA style: thread N gets pool stream (N mod size); shared  */
  SP_STREAMS_EXCLUSIVE = 1,   /* a thread owns its slot until it exits or releases it        */
} sp_stream_mode;

/* Allocator policy flags for sp_device_config.alloc_flags. */
enum {
  /* Do not reuse a block still in flight on another stream (by making the allocating stream wait
   * on that stream's free-event); allocate a new segment instead. */
  SP_ALLOC_NO_INFLIGHT_REUSE = 1u << 0,
};

enum { SP_STREAMS_MAX = 128 }; /* the largest pool, default stream included */

typedef struct sp_device_config { /* all-zero means defaults */
  const char *backend;            /* "host", "cuda"; NULL or "auto": best available            */
  int index;                      /* device ordinal within the backend                          */
  unsigned streams;               /* pool size including the default stream; 0 -> 32; <= 128    */
  sp_stream_mode stream_mode;     /* how threads get their current stream                       */
  unsigned slot_wait_ms;          /* exclusive mode: wait for a free slot; 0 -> fail at once    */
  size_t memory_limit;            /* bytes the allocator may hold; 0 -> no limit but the device */
  unsigned alloc_flags;           /* SP_ALLOC_* policy flags; 0 -> defaults                     */
} sp_device_config;

/* Opens device cfg->index of cfg->backend (cfg may be NULL: all defaults). Environment overrides,
 * read here and validated (a bad value fails the open with SP_ERR_INVALID_ARGUMENT and the message
 * "sp_device_open: VARIABLE='value' <what is wrong>"): STREAMPOOL_BACKEND (auto|host|cuda),
 * STREAMPOOL_STREAMS (2..128), STREAMPOOL_STREAM_MODE (round_robin|exclusive),
 * STREAMPOOL_SLOT_WAIT_MS, STREAMPOOL_MEMORY_LIMIT (bytes). The host backend also reads
 * STREAMPOOL_HOST_JITTER_US, STREAMPOOL_HOST_JITTER_SEED, STREAMPOOL_HOST_MEMORY (bytes: its
 * device memory size) and STREAMPOOL_HOST_DEVICES (1..16). One grammar for every STREAMPOOL_*
 * variable (these, STREAMPOOL_GRAPHS and STREAMPOOL_BATCHER_SPIN_US): a number is decimal digits
 * only (no sign, space or trailing text; more than 64 bits is refused, not clamped); a byte size
 * may add K, M, G or T (either case, powers of 1024) and then B or iB (64M = 64MB = 64MiB); a
 * switch is 0 or 1; names match exactly. An empty value is an error for every variable: unset it
 * to get the default.
 * Several devices, of one backend or several, may be open at once. Returns SP_ERR_NO_DEVICE for
 * an index out of range, SP_ERR_UNSUPPORTED for a backend not compiled in. Any thread. */
sp_status sp_device_open(const sp_device_config *cfg, sp_device **out);

/* Waits for all streams, frees every block, event and stream, and closes the device. Blocks and
 * events of dev become invalid; other threads must have stopped using dev. While a model or
 * batcher of dev is alive (not yet sp_model_free / sp_batcher_destroy) it refuses: SP_ERR_BUSY,
 * the message counting them, and dev stays open and usable (free them, then close again). NULL
 * is a no-op (SP_OK). In a child process after fork() it only forgets the handle (the parent's
 * resources are not the child's to free) and returns SP_OK. Externally synchronized. */
sp_status sp_device_close(sp_device *dev);

/* Waits until every stream of dev is idle. Holds no lock while waiting. Any thread. */
sp_status sp_device_sync(sp_device *dev);

/* "host" or "cuda". NULL for NULL. Any thread. */
const char *sp_device_backend(const sp_device *dev);
/* A human-readable device name, e.g. "NVIDIA H100 80GB HBM3" or "host (2 cores)". Any thread. */
const char *sp_device_name(const sp_device *dev);
/* The effective configuration after defaults and environment overrides; out->backend points into
 * dev and is valid until sp_device_close. Any thread. */
sp_status sp_device_config_get(const sp_device *dev, sp_device_config *out);
/* The backend's free and total device memory in bytes. Any thread. */
sp_status sp_device_memory_info(sp_device *dev, size_t *free_bytes, size_t *total_bytes);

/* How many devices backend ("host", "cuda"; NULL: the best available) has. A compiled-in backend
 * with no device gives SP_OK and 0; a backend not compiled in gives SP_ERR_UNSUPPORTED. Any
 * thread. */
sp_status sp_device_count(const char *backend, int *count);
/* Whether backend is available in this library (1) or not (0): compiled in, or, for "cuda" in the
 * shared library, its module libstreampool_cuda.so (beside libstreampool.so, or the path in
 * STREAMPOOL_CUDA_MODULE) loads; it is loaded on first use of any backend. On a machine without
 * CUDA the module does not load: "cuda" gives 0 here, and sp_device_count/sp_device_open with
 * "cuda" give SP_ERR_UNSUPPORTED with the loader's reason in the message. Any thread. */
int sp_backend_compiled(const char *backend);

/* ---------------------------------------------------------------------------------------------
 * Streams
 * ------------------------------------------------------------------------------------------- */

typedef struct sp_stream sp_stream; /* owned by the device; valid until sp_device_close */

/* Stream 0, never handed out by round-robin or exclusive binding. NULL for NULL. Any thread. */
sp_stream *sp_stream_default(sp_device *dev);

/* This thread's current stream on dev, binding one on first use: round-robin takes pool stream
 * 1 + (n mod (size-1)) for the n-th binding thread; exclusive takes a free slot, waiting up to
 * slot_wait_ms, else SP_ERR_POOL_EXHAUSTED. Any thread; lock-free after the first call. */
sp_status sp_stream_current(sp_device *dev, sp_stream **out);

/* Makes s this thread's current stream on dev (s must belong to dev). In exclusive mode s must be
 * the default stream or a stream held by sp_stream_acquire (a slot the thread owned is given back
 * first), or the slot the thread owns already (no change); a slot another thread owns, or a free
 * slot, is refused with SP_ERR_INVALID_ARGUMENT, changing nothing. Any thread. */
sp_status sp_stream_set_current(sp_device *dev, sp_stream *s);

/* Unbinds this thread's current stream on dev; in exclusive mode the slot is free again at once.
 * The thread's next sp_stream_current binds anew. SP_OK also when nothing was bound. A thread
 * that exits does this itself. Any thread. */
sp_status sp_stream_release_current(sp_device *dev);

/* Waits until all work submitted to s so far has finished. Any thread. */
sp_status sp_stream_sync(sp_stream *s);
/* SP_OK when s is idle, SP_ERR_NOT_READY while it has work. Any thread. */
sp_status sp_stream_query(sp_stream *s);
/* 0 for the default stream, 1..size-1 for pool streams. Any thread. */
unsigned sp_stream_index(const sp_stream *s);
/* The device that owns s. Any thread. */
sp_device *sp_stream_device(const sp_stream *s);

/* Work submitted to s after this call runs after ev's recorded work. The host is not blocked.
 * An event never recorded is complete. Any thread. */
sp_status sp_stream_wait_event(sp_stream *s, sp_event ev);

/* Runs fn(arg) on a library thread after all prior work on s; later work on s waits for it. fn
 * must not call into the library for the same stream. Any thread. */
sp_status sp_launch_host_func(sp_stream *s, void (*fn)(void *), void *arg);

/* Device ranges (sp_memcpy_async, sp_memset_async, sp_model_forward). "Device memory of a device"
 * is memory sp_alloc returned on it and not yet freed; a range [p, p + bytes) that touches any
 * memory the device's allocator holds must lie inside one such block (interior pointers are fine;
 * the bound is the block's size rounded to 512 B). A range touching none of it is host memory
 * (on the host backend device memory is host memory too: the allocator's map, not the address,
 * decides). A range that runs past a block's end, into a freed or cached block, from host memory
 * into device memory, or wraps around is SP_ERR_INVALID_ARGUMENT, naming the block, and nothing
 * is enqueued. Another device's memory counts as host memory here (sp_memcpy_peer_async copies
 * between devices). The check takes no lock for host memory, one pointer-map shard lock at a
 * block's start, and one segment lock inside a block. */

/* Stream-ordered copy of bytes from src to dst: host to device, device to host or device to
 * device, where "device" is device memory of s's device (above). At least one side must be device
 * memory (a host-to-host copy is SP_ERR_INVALID_ARGUMENT). Host memory must stay valid until the
 * copy has run. Any thread. */
sp_status sp_memcpy_async(sp_stream *s, void *dst, const void *src, size_t bytes);
/* Stream-ordered fill of bytes at dst, device memory of s's device (above), with
 * (unsigned char)value. Any thread. */
sp_status sp_memset_async(sp_stream *s, void *dst, int value, size_t bytes);

/* ---------------------------------------------------------------------------------------------
 * Several devices: cross-device waits and peer copies (docs/ARCHITECTURE.md, "Several devices")
 * ------------------------------------------------------------------------------------------- */

/* Work submitted to s after this call runs after ev's recorded work, where ev is an event of
 * ev_dev (which may be another device than s's). ev_dev == s's device: the same as
 * sp_stream_wait_event. Two devices of one backend: a device-side wait (host: the waiting stream's
 * worker blocks on the other stream's counter; cuda: cudaStreamWaitEvent, which accepts an event
 * of another device); the host thread is not blocked, and ev_dev must stay open until s has
 * passed the wait. Devices of different backends: a host-side fallback, the calling thread waits
 * for ev (sp_event_sync) before returning, which orders later work on s just as well. An event
 * never recorded is complete. Any thread. */
sp_status sp_stream_wait_event_peer(sp_stream *s, sp_device *ev_dev, sp_event ev);

/* Copies bytes from src, memory of src_dev (device memory from sp_alloc on src_dev, or host
 * memory), to dst, memory of dst_stream's device, in stream order on dst_stream. Only the
 * destination side is ordered: the caller makes the source ready first, e.g. by recording an event
 * on the source's stream and calling sp_stream_wait_event_peer(dst_stream, src_dev, that event),
 * and must not reuse src before the copy has run (record an event on dst_stream after it and
 * wait for that on src_dev's side, or sync dst_stream). src_dev == dst_stream's device: the same
 * as sp_memcpy_async. Two devices of one backend with a peer slot: one asynchronous device copy
 * (host: a memcpy on dst_stream's worker; cuda: cudaMemcpyPeerAsync, direct over NVLink/PCIe
 * when peer access is enabled, staged by the driver otherwise). Otherwise (different backends,
 * or no peer slot): a host-staged fallback that is correct for any pair: it syncs dst_stream (so
 * waits queued on it, including the peer wait above, have passed), copies src to a host buffer
 * on src_dev's default stream and from there to dst on dst_stream, in chunks of at most 8 MiB,
 * and returns when the copy is done. SP_ERR_INVALID_ARGUMENT for NULL pointers with bytes > 0;
 * bytes == 0 is SP_OK and does nothing. Any thread. */
sp_status sp_memcpy_peer_async(sp_stream *dst_stream, void *dst, sp_device *src_dev,
                               const void *src, size_t bytes);

/* Whether a peer copy from src_dev to dst_dev runs as one device copy (1: same device, or same
 * backend with a peer slot) or through the host-staged fallback (0). Any thread. */
int sp_peer_copy_direct(const sp_device *dst_dev, const sp_device *src_dev);

/* ---------------------------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------------------------- */

enum { SP_EVENT_TIMING = 1u << 0 };

/* Takes an event from dev's pool (flags: 0 or SP_EVENT_TIMING). SP_ERR_POOL_EXHAUSTED when every
 * event of the pool (262,144 less any retired) is live; free events cached by other threads are
 * taken first. Any thread. */
sp_status sp_event_acquire(sp_device *dev, unsigned flags, sp_event *out);
/* Returns ev to the pool; ev and every copy of it become stale. A second release returns
 * SP_ERR_INVALID_HANDLE. Releasing an event with work pending is allowed. A call on ev running in
 * another thread at the same time either completes on this event first or returns
 * SP_ERR_INVALID_HANDLE; it never acts on the event the pool hands out next. Any thread. */
sp_status sp_event_release(sp_device *dev, sp_event ev);
/* Marks the current end of s's work in ev and remembers s. Any thread. */
sp_status sp_event_record(sp_event ev, sp_stream *s);
/* SP_OK if ev's recorded work is done (or it was never recorded), SP_ERR_NOT_READY if not.
 * Any thread. */
sp_status sp_event_query(sp_device *dev, sp_event ev);
/* Waits on the host until ev's recorded work is done. Any thread. */
sp_status sp_event_sync(sp_device *dev, sp_event ev);
/* Milliseconds between two completed timing events. SP_ERR_NOT_READY if either is pending,
 * SP_ERR_INVALID_ARGUMENT if either lacks SP_EVENT_TIMING or was never recorded. Any thread. */
sp_status sp_event_elapsed_ms(sp_device *dev, sp_event start, sp_event end, float *ms);
/* The stream ev was last recorded on (SP_ERR_INVALID_ARGUMENT if never). Any thread. */
sp_status sp_event_stream(sp_device *dev, sp_event ev, sp_stream **out);

/* ---------------------------------------------------------------------------------------------
 * Memory: the stream-ordered caching allocator
 * ------------------------------------------------------------------------------------------- */

/* Allocates bytes (> 0) of device memory for use on s (NULL: this thread's current stream). The
 * block may be used on s at once. SP_ERR_LIMIT past memory_limit; SP_ERR_OUT_OF_MEMORY when the
 * device is full even after releasing the cache, with requested/allocated/reserved/limit in the
 * message. Under memory_limit a segment has its size class's size (2 MiB, 20 MiB, or the request
 * rounded up to 2 MiB) only while that fits under the limit, else exactly the request's size: so a
 * request whose size rounded to 512 fits in what the limit leaves gets memory (on a device with
 * nothing allocated: any request up to the limit). Any thread. */
sp_status sp_alloc(sp_device *dev, size_t bytes, sp_stream *s, void **out);

/* Frees p (NULL: no-op) in stream order: it may be reused by later work on its stream at once,
 * and by other streams only once the work of every stream recorded with sp_record_stream has
 * finished. Never blocks on device work. A pointer not returned by sp_alloc on dev, or freed
 * already, gives SP_ERR_INVALID_HANDLE and changes nothing. Any thread. */
sp_status sp_free(sp_device *dev, void *p);

/* Declares that live block p is also used by work on s (submitted before p's sp_free). Any
 * thread. */
sp_status sp_record_stream(sp_device *dev, void *p, sp_stream *s);

/* Syncs every stream, completes pending frees and returns every unused segment to the backend,
 * and on backends that can decommit (host; see docs/ARCHITECTURE.md) the memory of every whole
 * 2 MiB page of the free blocks of segments still in use. Any thread. */
sp_status sp_empty_cache(sp_device *dev);

typedef struct sp_memory_stats {
  size_t allocated_bytes, allocated_bytes_peak; /* handed to users (rounded sizes)            */
  size_t reserved_bytes, reserved_bytes_peak;   /* held from the backend (committed pages)     */
  uint64_t allocs, frees, cache_hits, backend_allocs, backend_frees;
  uint64_t deferred_frees, cross_stream_reuses, oom_retries, ooms;
} sp_memory_stats;

/* A consistent snapshot of dev's allocator counters. Any thread. */
sp_status sp_memory_stats_get(sp_device *dev, sp_memory_stats *out);
/* Sets both peaks to the current values. Any thread. */
sp_status sp_memory_stats_reset_peaks(sp_device *dev);
/* A JSON document {"stats":{...},"segments":[{"address","bytes","committed","stream","blocks":
 * [{"offset","bytes","state":"live|cached|pending","stream"}]}],"history":{...},"events":[...]}
 * ("events" empty when the history is off; see sp_memory_history_enable); free it with
 * sp_string_free. "committed": the segment's bytes less its decommitted pages (whole 2 MiB pages
 * of free blocks whose memory went back to the device, on backends that can; reserved_bytes is the
 * sum of "committed"). Any thread. */
sp_status sp_memory_snapshot_json(sp_device *dev, char **json_out);
/* Frees a string the library returned. NULL is a no-op. Any thread. */
void sp_string_free(char *s);

/* ---- Memory history: a bounded record of allocator events (off by default) ----
 * When on, the allocator records its events in a ring of the last `entries` events per device:
 * alloc, free, free_pending (deferred: other streams still use the block), free_complete (a
 * pending block cached at last), reuse and reuse_wait (a block of another stream taken; _wait:
 * the stream waits on the device for the owner's work), segment_map / segment_unmap, oom_retry
 * (out of memory or the limit: flush and retry), oom (the retry failed), empty_cache,
 * page_decommit / page_commit (free pages of a segment given back / taken again). Each has a
 * monotonic time, device, stream, thread, size and address; sp_memory_snapshot_json returns them
 * as "events" (schema in docs/ARCHITECTURE.md, "Memory history"). Off, the allocator pays one
 * relaxed load and a branch per operation; on, one atomic ticket and a 64-byte slot write per
 * event, no lock. STREAMPOOL_MEMORY_HISTORY=N (a count) turns it on at sp_device_open.
 * The device owns the ring (entries * 64 bytes, freed at sp_device_close; a ring of another size
 * is kept until then too). */
#define SP_MEMORY_HISTORY_MAX ((size_t)1 << 22) /* most entries */
/* Starts a new history of `entries` (1..SP_MEMORY_HISTORY_MAX) events, dropping the events
 * recorded so far. SP_ERR_INVALID_ARGUMENT out of range, SP_ERR_HOST_MEMORY without memory (the
 * previous state kept). Any thread. */
sp_status sp_memory_history_enable(sp_device *dev, size_t entries);
/* Stops recording; the events recorded so far are no longer reported. Any thread. */
sp_status sp_memory_history_disable(sp_device *dev);

/* ---------------------------------------------------------------------------------------------
 * Inference: models and batching
 * ------------------------------------------------------------------------------------------- */

typedef struct sp_model sp_model;
/* The element type of a model's weights and activations on the device. Inputs and outputs of
 * forward and infer are f32 whatever the dtype (converted on the device). SP_BF16 and SP_F16
 * store 16 bits and accumulate in f32; f16 (IEEE half: 11 significant bits, finite up to 65504)
 * keeps three more bits than bf16 and overflows where bf16 would not. */
typedef enum sp_dtype { SP_F32 = 0, SP_BF16 = 1, SP_F16 = 2 } sp_dtype;

/* A model is what its description says; nothing is guessed from tensor names.
 *
 * An MLP is a chain of layers; layer k is a Linear ("<linear>.weight" [out, in], and
 * "<linear>.bias" [out] unless no_bias), then its activation, then optionally a LayerNorm over
 * its out features ("<norm>.weight" and "<norm>.bias" [out], eps). Layers run in the order given;
 * in of layer k+1 must equal out of layer k. Every tensor of the file must be used. */
typedef enum sp_activation {
  SP_ACT_NONE = 0,  /* identity ("none")                                    */
  SP_ACT_RELU,      /* nn.ReLU ("relu")                                     */
  SP_ACT_GELU,      /* nn.GELU(), the erf form ("gelu")                     */
  SP_ACT_GELU_TANH, /* nn.GELU(approximate="tanh") ("gelu_tanh")            */
  SP_ACT_SILU,      /* nn.SiLU ("silu")                                     */
  SP_ACT_TANH,      /* nn.Tanh ("tanh")                                     */
} sp_activation;

typedef struct sp_mlp_layer { /* all-zero except linear: a Linear with bias and no activation */
  const char *linear;         /* tensor-name prefix of the Linear (e.g. "0", "net.fc1")        */
  int no_bias;                /* nonzero: Linear(bias=False), no "<linear>.bias" in the file   */
  sp_activation act;          /* after the Linear                                              */
  const char *norm;           /* NULL: none; else the prefix of a LayerNorm after the act      */
  float norm_eps;             /* the LayerNorm's eps; 0 -> 1e-5 (PyTorch's default)            */
} sp_mlp_layer;

typedef struct sp_model_desc {
  unsigned n_layers;          /* >= 1                                                          */
  const sp_mlp_layer *layers; /* [n_layers], in the order they run                             */
} sp_model_desc;

/* The text form of a description, used by the file's safetensors "__metadata__" (key
 * "streampool.arch"), a config.json beside the file (the same key), the CLI's --arch and Python's
 * Model.load(arch=...). Items are separated by spaces, commas or "->":
 *   NAME:linear  NAME:linear:nobias     a Linear (NAME the tensor prefix)
 *   relu gelu gelu_tanh silu tanh none  the activation of the Linear just before it
 *   NAME:layernorm  NAME:layernorm:eps=E  a LayerNorm after that Linear (and its activation)
 *   dropout                             identity (inference); allowed anywhere after a Linear
 * An activation or dropout may carry a name ("1:gelu", as nn.Sequential numbers it); it is
 * ignored. E.g. the nn.Sequential(Linear, GELU, LayerNorm, Linear) state dict:
 *   "0:linear 1:gelu 2:layernorm 3:linear".
 * An activation after a LayerNorm, two activations or two LayerNorms in a row are refused.
 * On success *out is a description owning its strings, freed with sp_model_desc_free; else
 * SP_ERR_INVALID_ARGUMENT naming the item and its position, SP_ERR_HOST_MEMORY. Any thread. */
sp_status sp_model_desc_parse(const char *text, sp_model_desc **out);
void sp_model_desc_free(sp_model_desc *desc); /* NULL ok. Externally synchronized. */

/* Loads an MLP described by desc from a safetensors file (tensors F32, BF16 or F16, converted to
 * dt, f32, bf16 or f16, on the host). desc NULL: the description comes from the file's
 * "__metadata__" key "streampool.arch", else from a config.json in the file's folder with that key
 * (the text form). A file with no description (a bare state dict) is refused, saying how to give
 * one; so is a torch.save file (zip or pickle), a tensor the description does not use (BatchNorm's
 * running_mean, a Conv's rank-4 weight, ... named as what they are), a missing tensor, a shape that
 * does not chain. All these give SP_ERR_INVALID_ARGUMENT with the problem named. Any thread. */
sp_status sp_model_load_desc(sp_device *dev, const char *safetensors_path,
                             const sp_model_desc *desc, sp_dtype dt, sp_model **out);

/* sp_model_load_desc(dev, safetensors_path, NULL, dt, out): the file (or its config.json) must
 * describe itself; before this version a bare state dict was read as Linear layers with ReLU
 * between them, which is now refused. Any thread. */
sp_status sp_model_load(sp_device *dev, const char *safetensors_path, sp_dtype dt, sp_model **out);

/* Writes the chain m runs as text to buf (at most size bytes, NUL-terminated when size > 0), e.g.
 * "Linear(512->1024) GELU -> LayerNorm(1024) -> Linear(1024->512, no bias)"; returns the length
 * the whole text needs (as snprintf; 0 for NULL m). Any thread. */
size_t sp_model_describe(const sp_model *m, char *buf, size_t size);

/* Builds a seeded MLP with layer sizes dims[0] -> dims[1] -> ... -> dims[n_dims-1] (n_dims >= 2),
 * Linear layers with bias and ReLU between them (none after the last), weights uniform in
 * +-1/sqrt(in) as PyTorch initializes Linear. Any thread. */
sp_status sp_model_mlp_random(sp_device *dev, const unsigned *dims, unsigned n_dims, uint64_t seed,
                              sp_dtype dt, sp_model **out);

/* Models read STREAMPOOL_GRAPHS when built (1, the default: each (stream, batch) forward is
 * captured once as a device graph where the backend has graphs, and replayed; 0: launched op by op;
 * another value, the empty one included: the build fails with SP_ERR_INVALID_ARGUMENT naming it).
 */

/* Frees m's weights. Work using m must have finished. NULL is a no-op. In a forked child it only
 * forgets m. While a resident of m is open (sp_resident_open) it frees nothing and logs an error.
 * Externally synchronized. */
void sp_model_free(sp_model *m);
/* m's shape, weight dtype and device, fixed at load. Any thread. */
unsigned sp_model_in_features(const sp_model *m);
unsigned sp_model_out_features(const sp_model *m);
sp_dtype sp_model_dtype(const sp_model *m);
sp_device *sp_model_device(const sp_model *m);

/* Device-side, stream-ordered: in and out are device memory of m's device (see "Device ranges"),
 * batch rows of f32 each (in_features and out_features floats a row), else
 * SP_ERR_INVALID_ARGUMENT. Besides sp_alloc's blocks, device memory another runtime allocated on
 * the same device (a PyTorch or CuPy tensor; CUDA: the driver's pointer attributes of both ends
 * say so) is accepted, range-checked by the driver only. Activations come from the allocator on s
 * and are freed in stream order. Any thread. */
sp_status sp_model_forward(sp_model *m, sp_stream *s, const float *in, float *out, unsigned batch);

/* Host in, host out, on the calling thread's current stream; returns when out is filled. Any
 * thread. */
sp_status sp_model_infer(sp_model *m, const float *in, float *out, unsigned batch);

typedef struct sp_batcher sp_batcher;
typedef struct sp_batcher_config { /* all-zero means defaults */
  unsigned max_batch;              /* rows per batched pass; 0 -> 16                        */
  unsigned max_delay_us;           /* wait after a batch's first row; 0 -> 200              */
  unsigned workers;                /* worker threads, each with its own stream; 0 -> 4      */
} sp_batcher_config;

/* Starts a batcher over m (cfg may be NULL). Reads STREAMPOOL_BATCHER_SPIN_US (microseconds a
 * caller polls for its answer before it sleeps, 0..100000; the grammar of sp_device_open's
 * variables; a bad value fails with SP_ERR_INVALID_ARGUMENT naming it). Any thread. */
sp_status sp_batcher_create(sp_model *m, const sp_batcher_config *cfg, sp_batcher **out);
/* Submits one row (in_features floats) and blocks until out (out_features floats) holds its
 * result. Any thread. */
sp_status sp_batcher_infer(sp_batcher *b, const float *in, float *out);
/* Finishes every accepted request, then stops the workers. NULL is a no-op. In a forked child it
 * only forgets b (its workers are the parent's threads). Externally synchronized (no
 * sp_batcher_infer may start during or after it). */
void sp_batcher_destroy(sp_batcher *b);

typedef struct sp_batcher_stats {
  uint64_t requests;  /* rows answered                   */
  uint64_t batches;   /* forward passes run              */
  uint64_t failed;    /* rows answered with an error     */
  uint64_t queued;    /* rows accepted, not yet in a pass */
  uint64_t fill_ns;   /* all passes: first row queued -> batch taken */
  uint64_t run_ns;    /* all passes: staging, forward, stream sync   */
  uint64_t answer_ns; /* all passes: rows copied back, callers woken */
} sp_batcher_stats;
/* b's counters so far, each read atomically (their sum is exact once callers and workers rest).
 * SP_ERR_FORKED in a forked child. Any thread, also while sp_batcher_infer runs. */
sp_status sp_batcher_stats_get(sp_batcher *b, sp_batcher_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Resident forwards: one caller's batch-1 MLP at the lowest latency
 * ------------------------------------------------------------------------------------------- */

/* sp_model_forward costs a graph launch and a stream sync per call even when its kernels take
 * nothing (about 8 us on an H200). A resident keeps the model running on the device between
 * calls: on CUDA one kernel with a block on every multiprocessor, each holding its share of every
 * layer's weights in shared memory, woken for each forward by a doorbell in mapped host memory.
 * A forward is then no launch and no stream sync: from one thread 1.24-1.42x sp_model_forward's
 * rate (docs/PERFORMANCE.md, "Resident forwards").
 *
 * What it costs, on CUDA: while the kernel runs it holds a block's worth of threads and shared
 * memory on every multiprocessor (other streams' kernels run beside it only as far as what is
 * left of each multiprocessor allows: one needing more shared memory waits for the kernel to
 * leave) and one host core polls while a forward is in flight; a forward blocks its caller and is
 * not stream-ordered; and device-wide synchronizing calls of other threads (cudaFree,
 * cudaDeviceSynchronize, a kernel module's first load) wait for the kernel to leave. It leaves
 * after STREAMPOOL_RESIDENT_IDLE_US microseconds without a forward (read at sp_resident_open,
 * 0..10000000, default 1000; the grammar of sp_device_open's variables) and at its first wait 10 ms
 * after it started; the next forward starts it again (tens of microseconds, weights reloaded from
 * device memory).
 *
 * A resident runs MLPs of at most 16 Linear layers (any activation, bias or not; no LayerNorm)
 * whose weights fit: on CUDA each block holds 1/multiprocessors of every layer's rows plus one
 * layer input in its shared memory (227 KB on an H200: about 29 MB of f32 weights in all, 59 MB
 * of bf16 or f16). The host backend runs the layers on a private stream of the resident's (the
 * same results as sp_model_forward, no speed-up), so code written for it runs on every backend. */
typedef struct sp_resident sp_resident;

/* Prepares m for resident forwards; launches nothing yet. m must outlive *out: sp_model_free(m)
 * while it is open logs an error and keeps m (close *out first), sp_device_close refuses
 * (SP_ERR_BUSY) while a resident of the device is open. SP_ERR_UNSUPPORTED naming the reason for a
 * model with a LayerNorm or more than 16 layers, one whose weights do not fit the device, or a
 * backend without resident forwards; SP_ERR_INVALID_ARGUMENT for NULL or a bad
 * STREAMPOOL_RESIDENT_IDLE_US. Any thread. */
sp_status sp_resident_open(sp_model *m, sp_resident **out);

/* One forward of one row. in (in_features floats) and out (out_features floats) are device memory
 * of the model's device, as sp_model_forward takes them ("Device ranges"), else
 * SP_ERR_INVALID_ARGUMENT. Not stream-ordered: in must hold its values when the call is made (the
 * work writing it finished: its stream synced), and out holds the result, visible to every stream
 * and to the host, when the call returns SP_OK. The result is sp_model_forward's for the same row
 * (f32 accumulation; in bf16 and f16 the input, every layer's output and the result rounded to the
 * dtype); on CUDA it equals, bit for bit, sp_model_forward's with STREAMPOOL_CUDA_LINEAR=kernel
 * when every layer's in_features is a multiple of 4 (f32) or 8 (bf16, f16) and in is 16-byte
 * aligned. A device fault, or no answer within 10 s, gives SP_ERR_BACKEND, and every later call
 * on r the same (close it). Any thread; calls on one r are serialized. */
sp_status sp_resident_forward(sp_resident *r, const float *in, float *out);

typedef struct sp_resident_stats {
  uint64_t forwards; /* forwards answered with SP_OK                                         */
  uint64_t launches; /* CUDA: kernel launches (the first forward's, and one after each time the
                        kernel left: idle, lease); 0 on the host backend                    */
} sp_resident_stats;
/* r's counters so far (SP_ERR_INVALID_ARGUMENT for NULL). Any thread; waits for a forward in
 * progress. */
sp_status sp_resident_stats_get(sp_resident *r, sp_resident_stats *out);

/* Stops r's kernel and frees what r holds. NULL is a no-op. In a forked child it only forgets r.
 * Externally synchronized: no sp_resident_forward on r may be running or start. */
void sp_resident_close(sp_resident *r);

/* ---------------------------------------------------------------------------------------------
 * Interop: extra streams, native handles, pinned host buffers (issue 10; the Python package and
 * other runtimes in the same process use these)
 * ------------------------------------------------------------------------------------------- */

/* Takes a pool stream besides this thread's current one, for the caller to use from any thread
 * until sp_stream_release. Exclusive mode: a free slot (waiting up to slot_wait_ms, else
 * SP_ERR_POOL_EXHAUSTED), owned by the caller alone, not bound to any thread (bind it with
 * sp_stream_set_current if wanted) and not given back at thread exit. Round-robin mode: the next
 * round-robin stream, shared as every round-robin stream is. Never the default stream. Any
 * thread. */
sp_status sp_stream_acquire(sp_device *dev, sp_stream **out);
/* Gives back a stream from sp_stream_acquire. Exclusive mode: its slot is free again at once (a
 * thread still bound to it keeps using it until it rebinds: unbind first); a stream not held
 * gives SP_ERR_INVALID_HANDLE and changes nothing. Round-robin mode: checks s belongs to dev and
 * is not the default stream. Any thread. */
sp_status sp_stream_release(sp_device *dev, sp_stream *s);

/* The backend's own handle of s, for another runtime to submit work to in s's order: cuda: the
 * cudaStream_t (non-blocking; valid until sp_device_close; never destroy it). The host backend
 * has none (its streams are library threads): SP_ERR_UNSUPPORTED. Any thread. */
sp_status sp_stream_native(sp_stream *s, void **out);
/* Work submitted to s after this call runs after the work submitted so far to native, another
 * runtime's stream of s's device (cuda: a cudaStream_t, 0 the legacy default stream). The host
 * is not blocked. SP_ERR_UNSUPPORTED on the host backend. Any thread. */
sp_status sp_stream_wait_native(sp_stream *s, void *native);

/* Allocates bytes (> 0) of host memory that dev's copies can use at full speed: page-locked
 * where the backend can (cuda: cudaHostAlloc), else ordinary host memory (the host backend, or a
 * failed page-lock; copies work either way). Free with sp_host_free_pinned on the same device;
 * buffers still live at sp_device_close are freed there. Any thread. */
sp_status sp_host_alloc_pinned(sp_device *dev, size_t bytes, void **out);
/* Frees p from sp_host_alloc_pinned on dev (NULL: no-op). A pointer not from it, from another
 * device, or freed already gives SP_ERR_INVALID_HANDLE and changes nothing. Any thread. */
sp_status sp_host_free_pinned(sp_device *dev, void *p);

/* ---------------------------------------------------------------------------------------------
 * Tokenizer: BERT WordPiece, exactly as Hugging Face `tokenizers` encodes one sequence
 * ------------------------------------------------------------------------------------------- */

typedef struct sp_tokenizer sp_tokenizer;

/* Loads a WordPiece tokenizer from path: a tokenizer.json, a vocab.txt (one token a line, id =
 * line number), or a folder holding either (tokenizer.json is preferred). tokenizer.json's
 * normalizer flags are read (BertNormalizer: clean_text, handle_chinese_chars, strip_accents,
 * lowercase), its WordPiece unk_token, continuing_subword_prefix and max_input_chars_per_word, its
 * [CLS]/[SEP] post-processor and its special added tokens; anything else (another normalizer,
 * pre-tokenizer or model, added tokens that are normalized, lstrip/rstrip/single_word) is refused
 * with SP_ERR_UNSUPPORTED naming it. Its truncation and padding are not used (see encode). A
 * vocab.txt alone is read as BertWordPieceTokenizer does: all four flags on, "[UNK]", "##", 100,
 * [CLS] and [SEP] (and [PAD], [MASK] as special tokens where the vocabulary has them). A bad file
 * gives SP_ERR_INVALID_ARGUMENT with the problem named. *out is freed with sp_tokenizer_free.
 * Any thread. */
sp_status sp_tokenizer_load(const char *path, sp_tokenizer **out);

/* Encodes len bytes of UTF-8 text (NUL bytes are text: clean_text drops them) as
 * [CLS] wordpieces... [SEP] into ids_out[0..*n_out). Special tokens written literally in the text
 * ("[SEP]", ...) become their ids, as in Hugging Face. Truncation: at most max_len ids in all, the
 * wordpieces cut to max_len - 2 with [SEP] kept last (max_len 0: no limit; else >= 2). The
 * attention mask is n_out ones. Errors, with nothing written: text not valid UTF-8 (overlong
 * forms, surrogates, code points above U+10FFFF, truncated sequences) gives
 * SP_ERR_INVALID_ARGUMENT with the byte offset; more ids than capacity gives
 * SP_ERR_INVALID_ARGUMENT saying how many are needed. Any thread, concurrently on one tokenizer. */
sp_status sp_tokenizer_encode(const sp_tokenizer *tok, const char *utf8, size_t len, size_t max_len,
                              int32_t *ids_out, size_t capacity, size_t *n_out);

/* The vocabulary's size (ids are 0 .. size-1). Any thread. */
size_t sp_tokenizer_vocab_size(const sp_tokenizer *tok);

/* Frees tok; NULL is a no-op. Externally synchronized: no encode may be running on it. */
void sp_tokenizer_free(sp_tokenizer *tok);

/* ---------------------------------------------------------------------------------------------
 * Encoders: BERT-family sentence embeddings (all-MiniLM-L6-v2, bge-small, e5-small, ...)
 * ------------------------------------------------------------------------------------------- */

typedef struct sp_encoder sp_encoder;

typedef struct sp_encoder_info {
  unsigned hidden; /* embedding size (the output dimension)              */
  unsigned layers, heads, intermediate;
  unsigned max_seq; /* tokens per text, [CLS] and [SEP] included (sentence-transformers'
                     * max_seq_length, else config.json's max_position_embeddings) */
  unsigned vocab;
  int pooling_cls; /* 0: mean over the real tokens; 1: the [CLS] token    */
  int normalize;   /* 1: embeddings are L2-normalized (a Normalize module) */
} sp_encoder_info;

/* Loads a Hugging Face folder as it is: config.json (model_type "bert"), model.safetensors
 * (F32/BF16/F16; "bert." prefixes accepted), vocab.txt or tokenizer.json, and when present
 * sentence-transformers' modules.json, 1_Pooling/config.json (mean or CLS), a Normalize module,
 * sentence_bert_config.json (max_seq_length). Anything it does not implement (another
 * model_type, an activation other than gelu/gelu_new, pooling max, a missing tensor, a shape that
 * disagrees with config.json, position_embedding_type other than "absolute") is refused with
 * SP_ERR_INVALID_ARGUMENT naming the file and the field. dt is the weights' and activations'
 * dtype on the device (SP_F32, SP_BF16: converted on the host at load). The device's backend
 * needs linear and encoder-layer support (else SP_ERR_UNSUPPORTED). sp_device_close refuses while
 * an encoder of the device lives. Any thread. */
sp_status sp_encoder_load(sp_device *dev, const char *dir, sp_dtype dt, sp_encoder **out);

/* Frees e (NULL ok). Externally synchronized: no embed on e may be running. In a forked child it
 * only forgets e (as sp_model_free). */
void sp_encoder_free(sp_encoder *e);

/* e's shape and pooling (SP_ERR_INVALID_ARGUMENT for NULL). Any thread. */
sp_status sp_encoder_info_get(const sp_encoder *e, sp_encoder_info *out);
/* The output dimension (hidden), 0 for NULL. Any thread. */
unsigned sp_encoder_dim(const sp_encoder *e);
/* The encoder's tokenizer (owned by e, valid until sp_encoder_free). Any thread. */
const sp_tokenizer *sp_encoder_tokenizer(const sp_encoder *e);

/* Embeds n texts (UTF-8, each NUL-terminated; truncated to max_seq tokens as
 * sentence-transformers does) on the calling thread's current stream of e's device: out receives
 * n rows of sp_encoder_dim(e) f32, host memory. Returns when out is filled. n may be large: the
 * texts run in passes of bounded size (padded to sequence-length buckets, attention-masked).
 * n == 0 is SP_OK with nothing written. A text that is not valid UTF-8 gives
 * SP_ERR_INVALID_ARGUMENT naming its index. Any thread, concurrently on one encoder. */
sp_status sp_encoder_embed(sp_encoder *e, const char *const *texts, size_t n, float *out);

/* The same from token ids: n sequences, sequence i is ids[i*stride, i*stride + lengths[i]) with
 * [CLS] ... [SEP] already in place; 1 <= lengths[i] <= min(stride, max_seq); every id < vocab
 * (checked: SP_ERR_INVALID_ARGUMENT names the sequence and position). Any thread. */
sp_status sp_encoder_embed_ids(sp_encoder *e, const int32_t *ids, const uint32_t *lengths, size_t n,
                               size_t stride, float *out);

/* The encoder batcher: single texts from many threads merged into passes under a token budget.
 * A caller's text is tokenized on the calling thread; a worker (each with its own stream) takes
 * queued texts, oldest first, while the pass stays within max_batch texts and max_tokens padded
 * tokens (the sum over its texts of each text's length rounded up to its bucket: the next power
 * of two, at least 8, at most max_seq), waiting up to max_delay_us after the pass's first text
 * for it to fill, and runs them through sp_encoder_embed_ids, one call per bucket. */
typedef struct sp_encoder_batcher sp_encoder_batcher;
typedef struct sp_encoder_batcher_config { /* all-zero means defaults */
  unsigned max_tokens;   /* padded tokens per pass (batch x bucket); 0 -> 8192          */
  unsigned max_batch;    /* texts per pass; 0 -> 16                                     */
  unsigned max_delay_us; /* how long a pass waits to fill after its first text; 0 -> 200 */
  unsigned workers;      /* passes in flight, each on its own stream; 0 -> 4            */
} sp_encoder_batcher_config;
/* Starts a batcher over e (cfg may be NULL; e must outlive it). max_tokens below the bucket of
 * e's max_seq (one longest text must fit a pass), max_batch above 65536, workers above
 * SP_STREAMS_MAX or max_delay_us above 10 s give SP_ERR_INVALID_ARGUMENT. Any thread. */
sp_status sp_encoder_batcher_create(sp_encoder *e, const sp_encoder_batcher_config *cfg,
                                    sp_encoder_batcher **out);
/* One text (UTF-8, NUL-terminated) from any thread: blocks until out (sp_encoder_dim floats) is
 * filled with the embedding sp_encoder_embed would give it. A text the tokenizer refuses fails
 * here, on the caller's thread, without reaching a pass; a failed pass fails exactly its texts.
 * Any thread. */
sp_status sp_encoder_batcher_embed(sp_encoder_batcher *b, const char *text, float *out);
/* b's counters (requests are texts, batches are passes; as sp_batcher_stats_get). Any thread,
 * also while embeds run. SP_ERR_FORKED in a forked child. */
sp_status sp_encoder_batcher_stats_get(sp_encoder_batcher *b, sp_batcher_stats *out);
/* Answers every accepted text first, then stops the workers. NULL is a no-op. In a forked child
 * it only forgets b. Externally synchronized (no embed may start during or after it). */
void sp_encoder_batcher_destroy(sp_encoder_batcher *b);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* STREAMPOOL_H */
