/* The backend method table: the one seam between the core and a device implementation.
 *
 * A backend is one `const sp__backend` with designated initializers. The core validates it once,
 * at first use (sp__backend_validate): the version must equal SP__BACKEND_VERSION and every
 * required slot must be set. Optional slots say what happens when they are NULL.
 *
 * Ownership: the core owns pool state, event generations and the allocator; a backend owns only
 * its own objects (device, stream, event handles). Backends never call into the core's pool or
 * allocator state; they may call sp__fail/sp__log (src/core/status.h) to report errors.
 *
 * Thread safety, for every backend: all slots may be called from any thread concurrently, except
 * that a stream or event is never destroyed while another call uses it. Submission to one stream
 * from several threads is serialized by the backend (its FIFO lock, or the driver).
 *
 * Errors: every slot returning sp_status sets the thread's last error through sp__fail() with the
 * backend's own detail (e.g. the CUDA error string) before returning a failure.
 */
#ifndef SP_BACKEND_H
#define SP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "streampool.h"

#define SP__BACKEND_VERSION                                           \
  10u /* 2: graph and pinned host memory slots; 3: memcpy_peer_async; \
         4: stream_native, stream_wait_native; 5: mem_is_foreign;     \
         6: sp__linear.act, nn_async; 7: nn_head_dim_max;             \
         8: mem_decommit, mem_commit;                                 \
         9: sp__linear.io, linear_f32_io_rows; 10: resident_* */

/* The unit of mem_decommit / mem_commit: 2 MiB (CUDA's VMM granularity, a huge page on Linux). */
#define SP__MEM_PAGE ((size_t)2 << 20)

typedef struct sp__bdevice sp__bdevice;     /* a backend's device   */
typedef struct sp__bstream sp__bstream;     /* a backend's stream   */
typedef struct sp__bevent sp__bevent;       /* a backend's event    */
typedef struct sp__bgraph sp__bgraph;       /* a backend's captured, instantiated graph */
typedef struct sp__bresident sp__bresident; /* a backend's resident forward (resident_open) */

/* The activation applied elementwise after a Linear's bias (and by layers that need one alone).
 * GELU_ERF is PyTorch's nn.GELU() and BERT's "gelu"; GELU_TANH its approximate="tanh". */
typedef enum sp__act {
  SP__ACT_NONE = 0,  /* identity                                   */
  SP__ACT_RELU,      /* max(0, v); NaN stays NaN                   */
  SP__ACT_GELU_ERF,  /* v/2 (1 + erf(v / sqrt 2))                  */
  SP__ACT_GELU_TANH, /* v/2 (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))) */
  SP__ACT_SILU,      /* v / (1 + exp(-v))                          */
  SP__ACT_TANH,      /* tanh(v)                                    */
  SP__ACT_COUNT
} sp__act;

/* y[batch, out] = act(x[batch, in] · w[out, in]ᵀ + bias[out]); row-major, PyTorch layout.
 * x, w, bias and y all hold `dtype` elements; accumulation is f32 (TF32 off); the activation is
 * applied in f32 after the bias. In bf16 and f16 a backend may round x·wᵀ + bias to the dtype
 * before the activation (the CUDA backend's cuBLASLt path does, as PyTorch's bf16 Linear then GELU
 * does): y is rounded once or twice.
 * io (bf16 and f16 only; 0 for f32): SP__LINEAR_X_F32 reads x as f32 rows, rounding each value to
 * dtype as it is read; SP__LINEAR_Y_F32 writes y as f32 rows holding the dtype-rounded results.
 * The results are exactly those of converting x in and y out around the op, so a model's first
 * and last layers need no conversion kernels. Allowed up to the backend's linear_f32_io_rows rows.
 */
enum { SP__LINEAR_X_F32 = 1u << 0, SP__LINEAR_Y_F32 = 1u << 1 };

typedef struct sp__linear {
  sp_dtype dtype;
  unsigned batch, in_features, out_features;
  const void *x;    /* [batch, in_features]               */
  const void *w;    /* [out_features, in_features]        */
  const void *bias; /* [out_features], or NULL for none   */
  void *y;          /* [batch, out_features]              */
  sp__act act;      /* after the bias                     */
  unsigned io;      /* SP__LINEAR_* flags; 0: x, y in dtype */
} sp__linear;

/* The layers of an encoder beside Linear (nn_async). Every tensor of `dtype` (f32, bf16, f16) is
 * row-major; arithmetic is f32; int32 arrays are device memory like the rest. A sequence batch is
 * `batch` sequences padded to `seq` tokens: row b*seq + t is token t of sequence b, and
 * lengths[b] (1..seq) says how many tokens of sequence b are real; the rest are padding. */
typedef enum sp__nn_kind {
  /* y[r, :] = (v - mean(v)) / sqrt(var(v) + eps) * gamma + beta, v = x[r, :] (+ residual[r, :]),
   * var the biased variance, for rows x cols. y may be x (in place); no other overlap. */
  SP__NN_LAYERNORM,
  /* y[b*seq + t, :] = word[ids[b*seq + t], :] + pos[t, :] + type[type_ids[b*seq + t] or 0, :]
   * over hidden columns; ids must be < vocab and type ids < types (checked on the host before
   * upload by the caller: the kernel does not bound-check). */
  SP__NN_EMBED,
  /* Multi-head self-attention core: qkv[b*seq + t, :] holds q | k | v (each heads x head_dim),
   * y[b*seq + t, h*head_dim + d] = sum_j softmax_j(scale * q_t,h · k_j,h) v_j,h[d] over the keys
   * j < lengths[b]; padded queries are computed the same way (their rows are ignored later). */
  SP__NN_ATTENTION,
  /* Sentence embedding: y[b, :] (f32) = the mean of x[b*seq + t, :] over t < lengths[b] (mean),
   * or x[b*seq, :] (cls); then divided by max(||y[b]||_2, 1e-12) when normalize. */
  SP__NN_POOL,
  SP__NN_KIND_COUNT
} sp__nn_kind;

typedef struct sp__nn {
  sp__nn_kind kind;
  sp_dtype dtype;
  union {
    struct {
      unsigned rows, cols;
      const void *x, *residual; /* residual NULL: none */
      const void *gamma, *beta; /* [cols]               */
      float eps;
      void *y;
    } norm;
    struct {
      unsigned batch, seq, hidden;
      const int32_t *ids, *type_ids; /* [batch*seq]; type_ids NULL: all 0 */
      const void *word, *pos, *type; /* [vocab|max_pos|types, hidden]    */
      void *y;                       /* [batch*seq, hidden]              */
    } embed;
    struct {
      unsigned batch, seq, heads, head_dim;
      const int32_t *lengths; /* [batch]                              */
      float scale;            /* usually 1/sqrt(head_dim)             */
      const void *qkv;        /* [batch*seq, 3*heads*head_dim]        */
      void *y;                /* [batch*seq, heads*head_dim]          */
    } attention;
    struct {
      unsigned batch, seq, hidden;
      const int32_t *lengths; /* [batch]                               */
      bool cls, normalize;    /* cls: token 0 instead of the mean      */
      const void *x;          /* [batch*seq, hidden] in dtype          */
      float *y;               /* [batch, hidden], always f32           */
    } pool;
  } u;
} sp__nn;

/* A resident forward's model (resident_open): a chain of Linear layers, each with an optional bias
 * and any activation (no LayerNorm), weights and biases in `dtype` on the device, immutable while
 * the resident lives. Inputs and outputs are f32 rows; in bf16 and f16 the input is rounded to
 * dtype as it is read, every layer's output is rounded to dtype, and the last layer's is written as
 * f32 holding that rounded value: the results of sp__linear with SP__LINEAR_X_F32 on the first
 * layer and SP__LINEAR_Y_F32 on the last. */
#define SP__RESIDENT_LAYERS_MAX 16u
typedef struct sp__resident_layer {
  unsigned in, out; /* features; in of layer k+1 is out of layer k */
  const void *w;    /* [out, in]                                   */
  const void *bias; /* [out], or NULL for none                     */
  sp__act act;      /* after the bias                              */
} sp__resident_layer;

typedef struct sp__resident_desc {
  sp_dtype dtype;
  unsigned n_layers;                /* 1..SP__RESIDENT_LAYERS_MAX                   */
  const sp__resident_layer *layers; /* [n_layers], in the order they run            */
  unsigned idle_us;                 /* the backend may stop holding the device after this
                                       long without a forward (the next one restarts it) */
} sp__resident_desc;

typedef struct sp__backend {
  unsigned version; /* SP__BACKEND_VERSION */
  const char *name; /* "host", "cuda"      */

  /* Devices. */
  sp_status (*device_count)(int *count); /* 0 devices is SP_OK */
  sp_status (*device_open)(int index, sp__bdevice **out);
  void (*device_close)(sp__bdevice *d); /* streams/events already destroyed */
  const char *(*device_name)(const sp__bdevice *d);
  sp_status (*memory_info)(sp__bdevice *d, size_t *free_bytes, size_t *total_bytes);

  /* Streams: FIFO queues of device work. */
  sp_status (*stream_create)(sp__bdevice *d, unsigned index, sp__bstream **out);
  void (*stream_destroy)(sp__bstream *s);    /* waits for the stream's work first */
  sp_status (*stream_query)(sp__bstream *s); /* SP_OK idle, SP_ERR_NOT_READY busy */
  sp_status (*stream_sync)(sp__bstream *s);
  sp_status (*memcpy_async)(sp__bstream *s, void *dst, const void *src, size_t bytes);
  sp_status (*memset_async)(sp__bstream *s, void *dst, int value, size_t bytes);
  sp_status (*host_func)(sp__bstream *s, void (*fn)(void *), void *arg);
  /* Optional: NULL -> sp_model_* return SP_ERR_UNSUPPORTED on this backend. Stream-ordered for
   * x, bias and y; w must not be written by the kernel just before the op on s (the CUDA
   * backend may read w while that kernel still runs: cuda_pdl.h). The library's weights are
   * written only at load, which syncs. */
  sp_status (*linear_async)(sp__bstream *s, const sp__linear *op);
  /* Optional: the most rows a linear op with io flags may have on d (0: none; NULL: none). */
  unsigned (*linear_f32_io_rows)(sp__bdevice *d);
  /* Optional: converts n elements between f32 and bf16 or f16 (round to nearest
   * even). NULL -> only f32 models run on this backend. */
  sp_status (*convert_async)(sp__bstream *s, void *dst, sp_dtype dst_type, const void *src,
                             sp_dtype src_type, size_t n);
  /* Optional: one encoder layer op (sp__nn), stream-ordered like linear_async, in f32, bf16 and f16
   * (then convert_async is there too). NULL -> encoders and MLPs with LayerNorm are
   * SP_ERR_UNSUPPORTED on this backend. An op that fails its argument checks (sp__nn_op_check,
   * backend/nn_check.h, the same for every backend) returns SP_ERR_INVALID_ARGUMENT at submission
   * and runs nothing; a shape beyond the backend's kernels may be SP_ERR_UNSUPPORTED (CUDA:
   * attention head_dim > 128), with nothing run. */
  sp_status (*nn_async)(sp__bstream *s, const sp__nn *op);
  /* The largest attention head_dim nn_async runs (0: any), so an encoder is refused at load
   * (sp__attention_check) rather than at its first pass. */
  unsigned nn_head_dim_max;

  /* Events: a recorded event completes when the work before it on its stream has. An event
   * never recorded is complete. Re-recording replaces the earlier mark. */
  sp_status (*event_create)(sp__bdevice *d, unsigned flags, sp__bevent **out); /* SP_EVENT_* */
  void (*event_destroy)(sp__bevent *e);
  sp_status (*event_record)(sp__bevent *e, sp__bstream *s);
  sp_status (*stream_wait_event)(sp__bstream *s, sp__bevent *e);
  sp_status (*event_query)(sp__bevent *e); /* SP_OK done, SP_ERR_NOT_READY */
  sp_status (*event_sync)(sp__bevent *e);
  /* Optional: NULL -> sp_event_elapsed_ms returns SP_ERR_UNSUPPORTED. */
  sp_status (*event_elapsed_ms)(sp__bevent *start, sp__bevent *end, float *ms);

  /* Memory: raw segments; the allocator sub-allocates them. mem_alloc returns
   * SP_ERR_OUT_OF_MEMORY (never another status) when the device is full. */
  sp_status (*mem_alloc)(sp__bdevice *d, size_t bytes, void **out);
  sp_status (*mem_free)(sp__bdevice *d, void *p);

  /* Optional, both or none: the physical memory of whole pages of a segment given back and taken
   * again, its addresses kept. [segment + offset, + bytes) lies in one live segment of d (segment:
   * what mem_alloc returned); offset and bytes are multiples of SP__MEM_PAGE. mem_decommit: the
   * range's contents are lost and its bytes no longer count as used (memory_info); the caller
   * touches it again only after mem_commit of it returns SP_OK. mem_commit: usable again, contents
   * undefined; SP_ERR_OUT_OF_MEMORY (nothing changed) when the device is full. mem_decommit may
   * answer SP_ERR_UNSUPPORTED (nothing changed) for a segment whose pages it cannot give back
   * (cuda: one from cudaMalloc); the caller then keeps that segment whole. mem_free frees a
   * segment whatever its pages' state. Neither is called during a capture. NULL -> segments stay
   * whole: memory comes back to the device only segment by segment. */
  sp_status (*mem_decommit)(sp__bdevice *d, void *segment, size_t offset, size_t bytes);
  sp_status (*mem_commit)(sp__bdevice *d, void *segment, size_t offset, size_t bytes);

  /* Optional, all four or none: graphs (record a stream's work once, replay it with one launch).
   * NULL -> no graphs: callers launch the work op by op.
   * capture_begin starts recording s (thread-local mode: other threads keep allocating and
   * launching on other streams); until capture_end, work submitted to s from this thread is
   * recorded, not run. During capture the caller must not sync s, query it, record events on it
   * or make it wait on events of other streams, allocate or free raw or pinned memory on the
   * capturing thread, submit to s from another thread, or destroy s; a thread captures one stream
   * at a time. Every buffer the work touches must stay allocated (same address) until
   * graph_destroy. The host backend checks all of this (an assertion in debug builds; otherwise
   * the breaching call returns SP_ERR_BACKEND and the capture is invalidated).
   * Host memory touched by captured copies must come from host_alloc_pinned.
   * capture_end always ends the capture; on success *out is an instantiated graph, on any
   * failure (including an invalidated capture) nothing is left behind and SP_ERR_BACKEND says why.
   * graph_launch runs a graph on s (any stream of the device), stream-ordered. A graph uses the
   * per-stream scratch of the stream it was captured on (the matmul workspace): graphs captured
   * on one stream must not run concurrently with each other nor with work on that stream, e.g.
   * capture them on a private stream and launch them all on one stream (src/core/ops.c).
   * graph_destroy may be called while a launch is in flight (the backend frees it after), but the
   * graph's buffers must outlive every launch: the caller syncs the stream before freeing them. */
  sp_status (*graph_capture_begin)(sp__bstream *s);
  sp_status (*graph_capture_end)(sp__bstream *s, sp__bgraph **out);
  sp_status (*graph_launch)(sp__bgraph *g, sp__bstream *s);
  void (*graph_destroy)(sp__bgraph *g); /* NULL ok */

  /* Optional, both or none: page-locked host memory that device copies (captured ones too) can
   * use directly. NULL -> callers use ordinary host memory (sp__malloc). */
  sp_status (*host_alloc_pinned)(sp__bdevice *d, size_t bytes, void **out);
  sp_status (*host_free_pinned)(sp__bdevice *d, void *p); /* NULL ok */

  /* Optional: copies bytes from src (memory of src_dev, a device of this same backend) to dst
   * (memory of dst_stream's device) in stream order on dst_stream; the source side is ordered by
   * the caller (an event wait on dst_stream first). The devices may differ. NULL -> the core's
   * host-staged fallback (sync dst_stream, copy through a host buffer; see sp_memcpy_peer_async).
   */
  sp_status (*memcpy_peer_async)(sp__bstream *dst_stream, void *dst, sp__bdevice *src_dev,
                                 const void *src, size_t bytes);

  /* Optional, both or none: interop with other runtimes' streams in this process (issue 10).
   * stream_native gives the backend's own handle of s (cuda: the cudaStream_t), valid as long as
   * s is. stream_wait_native makes work submitted to s after the call run after the work already
   * submitted to native, a handle of the same kind (cuda: an event recorded on native, waited on
   * by s, destroyed; the host is not blocked). NULL -> sp_stream_native and sp_stream_wait_native
   * return SP_ERR_UNSUPPORTED (the host backend: its streams are library threads, not handles
   * another runtime could submit to). */
  sp_status (*stream_native)(sp__bstream *s, void **out);
  sp_status (*stream_wait_native)(sp__bstream *s, void *native);

  /* Optional: whether [p, p + bytes) lies in device memory of d that the allocator did not hand
   * out (another runtime's, e.g. a PyTorch or CuPy tensor), so sp_model_forward may read and write
   * it; the caller has checked that the range is in none of the allocator's segments. Never fails
   * (an unknown pointer is false) and sets no error. NULL -> false: every device pointer comes
   * from the allocator (the host backend: anything else is host memory). */
  bool (*mem_is_foreign)(sp__bdevice *d, const void *p, size_t bytes);

  /* Optional, all four or none: resident forwards (sp_resident_*, include/streampool.h). NULL ->
   * sp_resident_open returns SP_ERR_UNSUPPORTED. (The host backend runs the layers on a private
   * stream; the CUDA backend keeps a kernel running.)
   * resident_open prepares desc's model on d for batch-1 forwards that keep it on the device
   * between calls (cuda: one kernel holding the weights in shared memory); a model it cannot hold
   * is SP_ERR_UNSUPPORTED naming what does not fit, with nothing left behind.
   * resident_run runs one forward: in (in_features f32) and out (out_features f32) are device
   * memory of d, in holds its values when the call is made, and out holds the result, visible to
   * every stream and to the host, when it returns SP_OK. Blocking, not stream-ordered. A device
   * fault or a stall is SP_ERR_BACKEND, after which every later run fails the same way. Calls on
   * one resident are serialized by the caller.
   * resident_launches: how many times the device side was started (cuda: kernel launches; 0
   * where nothing is launched); called like a run, never during one.
   * resident_close stops it and frees what it holds; no run may be in progress. */
  sp_status (*resident_open)(sp__bdevice *d, const sp__resident_desc *desc, sp__bresident **out);
  sp_status (*resident_run)(sp__bresident *r, const float *in, float *out);
  uint64_t (*resident_launches)(const sp__bresident *r);
  void (*resident_close)(sp__bresident *r);
} sp__backend;

/* The compiled-in backends. */
extern const sp__backend sp__host_backend;
#ifdef SP_HAVE_CUDA
extern const sp__backend sp__cuda_backend;
#endif

/* Finds a compiled-in backend by name (NULL or "auto": the best with a device: cuda, then host).
 * Validates it once. SP_ERR_UNSUPPORTED if name is not compiled in, SP_ERR_BACKEND if its table
 * is invalid. Any thread. */
sp_status sp__backend_find(const char *name, const sp__backend **out);

/* For white-box tests only (e.g. the fault-injecting wrapper of tests/common/internal): from now
 * on sp__backend_find, sp_device_count and sp_device_open return `be` wherever they would return
 * the compiled-in backend named be->name (asked by name or chosen by "auto"). NULL removes the
 * override. `be` is validated first (SP_ERR_BACKEND, nothing changes) and must name a compiled-in
 * backend (else SP_ERR_UNSUPPORTED). Devices keep the table they were opened with: `be` must
 * outlive every device opened through it. One override at a time; any thread. */
sp_status sp__backend_override(const sp__backend *be);

/* Checks a table: version and required slots. SP_OK or SP_ERR_BACKEND with the slot named. */
sp_status sp__backend_validate(const sp__backend *be);

#endif /* SP_BACKEND_H */
