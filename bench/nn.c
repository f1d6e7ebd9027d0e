/* bench/nn: the CUDA backend's encoder-layer kernels (nn_async) and Linear activations, one op at
 * a time, in one run.
 *
 * Rows: LayerNorm, the embedding gather, attention and pooling on all-MiniLM-L6-v2's shapes
 * (hidden 384, 12 heads of 32) at batch 1 and 256 x 32 tokens and longer sequences, BERT-base's
 * (768, 12 x 64, seq 512); Linear 384 -> 1536 with no activation and with GELU (erf), so the cost
 * of the activation (one in-place kernel after cuBLASLt, or our kernel's epilogue) shows as the
 * ratio between the two rows; the four Linears of a MiniLM layer at 32 rows (one sentence).
 * STREAMPOOL_CUDA_LINEAR=kernel / cublaslt force one Linear implementation (default: the timed
 * choice). f32, bf16 and f16. Each row: microseconds per op on the device
 * (timing events around REPS back-to-back submissions after a warm-up) and the bytes the op must
 * move at least, per second. The data is zeros (timing does not depend on values; lengths are
 * the full sequence).
 * Method: the backend table directly (white-box: sp__backend_find), one stream.
 * usage: nn [--reps N]   (no CUDA device: prints "skipped" and exits 0)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/dtype.h"

enum { MAXBUF = 8 };

static const sp__backend *B;
static sp__bdevice *D;
static sp__bstream *S;
static unsigned reps = 50;

static int check(sp_status st, const char *what) {
  if (st == SP_OK) return 0;
  fprintf(stderr, "nn: %s: %s (%s)\n", what, sp_status_str(st), sp_last_error());
  exit(1);
}

/* A zeroed device buffer of bytes. */
static void *dev_zero(size_t bytes) {
  void *p = NULL;
  check(B->mem_alloc(D, bytes, &p), "mem_alloc");
  check(B->memset_async(S, p, 0, bytes), "memset_async");
  return p;
}

static int32_t *dev_lengths(unsigned batch, unsigned seq) {
  int32_t *h = malloc(batch * sizeof(*h));
  for (unsigned b = 0; b < batch; b++) h[b] = (int32_t)seq;
  int32_t *p = dev_zero(batch * sizeof(*h));
  check(B->memcpy_async(S, p, h, batch * sizeof(*h)), "memcpy_async");
  check(B->stream_sync(S), "stream_sync");
  free(h);
  return p;
}

typedef struct row {
  const char *name;
  sp__nn nn;         /* kind < SP__NN_KIND_COUNT: an nn op */
  sp__linear linear; /* else this */
  double bytes;      /* the least memory traffic of one op */
} row;

static sp_status submit(const row *r) {
  return r->nn.kind < SP__NN_KIND_COUNT ? B->nn_async(S, &r->nn) : B->linear_async(S, &r->linear);
}

/* Device microseconds per op. */
static double time_row(const row *r) {
  sp__bevent *e0 = NULL, *e1 = NULL;
  check(B->event_create(D, SP_EVENT_TIMING, &e0), "event_create");
  check(B->event_create(D, SP_EVENT_TIMING, &e1), "event_create");
  for (int i = 0; i < 3; i++) check(submit(r), r->name);
  check(B->event_record(e0, S), "event_record");
  for (unsigned i = 0; i < reps; i++) check(submit(r), r->name);
  check(B->event_record(e1, S), "event_record");
  check(B->event_sync(e1), "event_sync");
  float ms = 0;
  check(B->event_elapsed_ms(e0, e1, &ms), "event_elapsed_ms");
  B->event_destroy(e0);
  B->event_destroy(e1);
  return 1e3 * ms / reps;
}

static void print_row(const row *r, sp_dtype dt, const char *shape) {
  double us = time_row(r);
  printf("%-11s %-5s %-28s %10.2f %10.1f\n", r->name, sp__dtype_name(dt), shape, us,
         r->bytes / (us * 1e-6) / 1e9);
}

static void bench_dtype(sp_dtype dt) {
  size_t es = sp__dtype_size(dt);
  char shape[64];
  static const unsigned ln[][2] = {{32, 384}, {8192, 384}, {4096, 768}};
  for (size_t i = 0; i < 3; i++) {
    size_t n = (size_t)ln[i][0] * ln[i][1];
    row r = {.name = "layernorm", .nn = {.kind = SP__NN_LAYERNORM, .dtype = dt}};
    r.nn.u.norm.rows = ln[i][0];
    r.nn.u.norm.cols = ln[i][1];
    r.nn.u.norm.x = r.nn.u.norm.y = dev_zero(n * es);
    r.nn.u.norm.residual = dev_zero(n * es);
    r.nn.u.norm.gamma = dev_zero(ln[i][1] * es);
    r.nn.u.norm.beta = dev_zero(ln[i][1] * es);
    r.nn.u.norm.eps = 1e-12f;
    r.bytes = 3.0 * (double)(n * es);
    snprintf(shape, sizeof(shape), "%ux%u +res in place", ln[i][0], ln[i][1]);
    print_row(&r, dt, shape);
    const void *f[] = {r.nn.u.norm.x, r.nn.u.norm.residual, r.nn.u.norm.gamma, r.nn.u.norm.beta};
    for (int k = 0; k < 4; k++) check(B->mem_free(D, (void *)f[k]), "mem_free");
  }
  { /* embed: MiniLM, 256 x 32 tokens */
    unsigned batch = 256, seq = 32, hidden = 384;
    size_t rows = (size_t)batch * seq;
    row r = {.name = "embed", .nn = {.kind = SP__NN_EMBED, .dtype = dt}};
    r.nn.u.embed.batch = batch;
    r.nn.u.embed.seq = seq;
    r.nn.u.embed.hidden = hidden;
    r.nn.u.embed.ids = dev_zero(rows * 4);
    r.nn.u.embed.type_ids = dev_zero(rows * 4);
    r.nn.u.embed.word = dev_zero((size_t)30522 * hidden * es);
    r.nn.u.embed.pos = dev_zero((size_t)512 * hidden * es);
    r.nn.u.embed.type = dev_zero((size_t)2 * hidden * es);
    r.nn.u.embed.y = dev_zero(rows * hidden * es);
    r.bytes = 2.0 * (double)(rows * hidden * es);
    snprintf(shape, sizeof(shape), "%ux%u, hidden %u", batch, seq, hidden);
    print_row(&r, dt, shape);
    const void *f[] = {r.nn.u.embed.ids, r.nn.u.embed.type_ids, r.nn.u.embed.word,
                       r.nn.u.embed.pos, r.nn.u.embed.type,     r.nn.u.embed.y};
    for (int k = 0; k < 6; k++) check(B->mem_free(D, (void *)f[k]), "mem_free");
  }
  static const unsigned at[][4] = {
      {1, 32, 12, 32}, {256, 32, 12, 32}, {32, 128, 12, 32}, {8, 256, 12, 32}, {8, 512, 12, 64}};
  for (size_t i = 0; i < 5; i++) {
    unsigned batch = at[i][0], seq = at[i][1], heads = at[i][2], hd = at[i][3];
    size_t rows = (size_t)batch * seq, hidden = (size_t)heads * hd;
    row r = {.name = "attention", .nn = {.kind = SP__NN_ATTENTION, .dtype = dt}};
    r.nn.u.attention.batch = batch;
    r.nn.u.attention.seq = seq;
    r.nn.u.attention.heads = heads;
    r.nn.u.attention.head_dim = hd;
    r.nn.u.attention.scale = 0.125f;
    r.nn.u.attention.lengths = dev_lengths(batch, seq);
    r.nn.u.attention.qkv = dev_zero(rows * 3 * hidden * es);
    r.nn.u.attention.y = dev_zero(rows * hidden * es);
    r.bytes = 4.0 * (double)(rows * hidden * es);
    snprintf(shape, sizeof(shape), "%ux%u, %u heads x %u", batch, seq, heads, hd);
    print_row(&r, dt, shape);
    const void *f[] = {r.nn.u.attention.lengths, r.nn.u.attention.qkv, r.nn.u.attention.y};
    for (int k = 0; k < 3; k++) check(B->mem_free(D, (void *)f[k]), "mem_free");
  }
  { /* pool: mean + normalize, MiniLM 256 x 32 */
    unsigned batch = 256, seq = 32, hidden = 384;
    row r = {.name = "pool", .nn = {.kind = SP__NN_POOL, .dtype = dt}};
    r.nn.u.pool.batch = batch;
    r.nn.u.pool.seq = seq;
    r.nn.u.pool.hidden = hidden;
    r.nn.u.pool.normalize = true;
    r.nn.u.pool.lengths = dev_lengths(batch, seq);
    r.nn.u.pool.x = dev_zero((size_t)batch * seq * hidden * es);
    r.nn.u.pool.y = dev_zero((size_t)batch * hidden * 4);
    r.bytes = (double)((size_t)batch * seq * hidden * es);
    snprintf(shape, sizeof(shape), "%ux%u, hidden %u, mean+norm", batch, seq, hidden);
    print_row(&r, dt, shape);
    const void *f[] = {r.nn.u.pool.lengths, r.nn.u.pool.x, r.nn.u.pool.y};
    for (int k = 0; k < 3; k++) check(B->mem_free(D, (void *)f[k]), "mem_free");
  }
  /* Linear 384 -> 1536 at batch 1 and 8192 rows, without and with GELU; then the encoder layer's
   * four Linears for one 32-token sentence (MiniLM: QKV, attention output, FFN in with GELU, FFN
   * out), the shapes a batch-1 embedding runs. */
  static const struct {
    unsigned batch, in, out;
    sp__act act;
  } lin[] = {{1, 384, 1536, SP__ACT_NONE},      {1, 384, 1536, SP__ACT_GELU_ERF},
             {8192, 384, 1536, SP__ACT_NONE},   {8192, 384, 1536, SP__ACT_GELU_ERF},
             {32, 384, 1152, SP__ACT_NONE},     {32, 384, 384, SP__ACT_NONE},
             {32, 384, 1536, SP__ACT_GELU_ERF}, {32, 1536, 384, SP__ACT_NONE}};
  for (size_t i = 0; i < sizeof(lin) / sizeof(lin[0]); i++) {
    unsigned batch = lin[i].batch, in = lin[i].in, out = lin[i].out;
    row r = {.name = lin[i].act ? "linear+gelu" : "linear", .nn = {.kind = SP__NN_KIND_COUNT}};
    r.linear = (sp__linear){dt,
                            batch,
                            in,
                            out,
                            dev_zero((size_t)batch * in * es),
                            dev_zero((size_t)out * in * es),
                            dev_zero(out * es),
                            dev_zero((size_t)batch * out * es),
                            lin[i].act,
                            0};
    r.bytes = (double)(((size_t)batch * (in + out) + (size_t)out * in) * es);
    snprintf(shape, sizeof(shape), "%ux%u -> %u, bias", batch, in, out);
    print_row(&r, dt, shape);
    const void *f[] = {r.linear.x, r.linear.w, r.linear.bias, r.linear.y};
    for (int k = 0; k < 4; k++) check(B->mem_free(D, (void *)f[k]), "mem_free");
  }
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = (unsigned)atoi(argv[++i]);
  if (reps == 0) reps = 1;
  int n = 0;
  if (sp__backend_find("cuda", &B) != SP_OK || B->device_count(&n) != SP_OK || n == 0) {
    printf("skipped: no CUDA device\n");
    return 0;
  }
  check(B->device_open(0, &D), "device_open");
  check(B->stream_create(D, 0, &S), "stream_create");
  printf("device: %s; %u reps a row\n", B->device_name(D), reps);
  printf("%-11s %-5s %-28s %10s %10s\n", "op", "dtype", "shape", "us/op", "GB/s min");
  bench_dtype(SP_F32);
  bench_dtype(SP_BF16);
  bench_dtype(SP_F16);
  B->stream_destroy(S);
  B->device_close(D);
  return 0;
}
