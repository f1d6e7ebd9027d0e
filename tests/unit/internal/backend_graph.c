/* White-box tests of the backends' optional graph and pinned host memory slots.
 *
 * Goal: on a backend with graph slots (CUDA), a graph captured from memcpy (pinned host -> device),
 * memset, Linear (f32, bias + ReLU), f32 <-> bf16 conversions and memcpy (device -> pinned host)
 * replays correctly many times with new input data written into the captured host buffer between
 * launches; another thread may allocate device memory and run its own stream while one thread
 * captures (thread-local capture mode); a capture broken by a forbidden call (a sync) fails at
 * capture_end with SP_ERR_BACKEND and leaves the stream usable; a Linear on a stream whose
 * cuBLASLt state does not exist yet is capturable. On every backend: the table's optional groups
 * are all set or all NULL, and the validator rejects half-filled groups. On the host backend the
 * graph part prints "host: skipped: no graph support" and passes.
 *
 * Method: drive each compiled-in backend's table directly (no core). Inputs are seeded (tu_seed);
 * outputs are compared with a double-precision reference (f32: relative 1e-4, TF32 is off;
 * after the bf16 round trip: the reference rounded to bf16, 1e-2); failures print both values.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "testutil.h"

#include "backend/backend.h"

enum { BATCH = 5, IN = 64, OUT = 48, REPLAYS = 25 };

/* f32 -> bf16 -> f32, round to nearest even (finite inputs). */
static float bf16_round(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  u &= 0xFFFF0000u;
  memcpy(&v, &u, sizeof(v));
  return v;
}

static float rand_unit(tu_rng *r) { return (float)tu_rng_below(r, 2001) / 1000.0f - 1.0f; }

/* ---- the table ----------------------------------------------------------------------------- */

static void check_table(const sp__backend *be) {
  int graph = !!be->graph_capture_begin + !!be->graph_capture_end + !!be->graph_launch +
              !!be->graph_destroy;
  if (graph != 0 && graph != 4) fail_msg("%s: %d of 4 graph slots set", be->name, graph);
  if (!be->host_alloc_pinned != !be->host_free_pinned)
    fail_msg("%s: pinned slots half set", be->name);
  SP_CHECK_OK(sp__backend_validate(be));
}

static sp_status fake_begin(sp__bstream *s) {
  (void)s;
  return SP_OK;
}

static sp_status fake_pinned(sp__bdevice *d, size_t bytes, void **out) {
  (void)d;
  (void)bytes;
  (void)out;
  return SP_ERR_UNSUPPORTED;
}

static void test_validate(void **state) {
  (void)state;
  const char *names[4];
  int n = tu_backends(names);
  for (int i = 0; i < n; i++) {
    const sp__backend *be = NULL;
    SP_CHECK_OK(sp__backend_find(names[i], &be));
    check_table(be);
  }
  sp__backend half = sp__host_backend;
  half.graph_capture_begin = fake_begin; /* one of four */
  half.graph_capture_end = NULL;
  half.graph_launch = NULL;
  half.graph_destroy = NULL;
  SP_CHECK_STATUS(sp__backend_validate(&half), SP_ERR_BACKEND);
  assert_non_null(strstr(sp_last_error(), "graph"));
  half = sp__host_backend;
  half.host_alloc_pinned = fake_pinned;
  half.host_free_pinned = NULL;
  SP_CHECK_STATUS(sp__backend_validate(&half), SP_ERR_BACKEND);
  assert_non_null(strstr(sp_last_error(), "pinned"));
}

/* ---- capture and replay -------------------------------------------------------------------- */

typedef struct graph_bufs {
  float *h_in, *h_out, *h_round, *h_fill; /* pinned: x, y (f32), y via bf16, memset target */
  void *x, *w, *b, *y, *yb, *y2, *fill;   /* device                                        */
} graph_bufs;

static void *dev_alloc(const sp__backend *be, sp__bdevice *d, size_t bytes) {
  void *p = NULL;
  SP_CHECK_OK(be->mem_alloc(d, bytes, &p));
  return p;
}

static float *pin_alloc(const sp__backend *be, sp__bdevice *d, size_t n) {
  void *p = NULL;
  SP_CHECK_OK(be->host_alloc_pinned(d, n * sizeof(float), &p));
  assert_non_null(p);
  return p;
}

static void bufs_open(const sp__backend *be, sp__bdevice *d, graph_bufs *g) {
  g->h_in = pin_alloc(be, d, (size_t)BATCH * IN);
  g->h_out = pin_alloc(be, d, (size_t)BATCH * OUT);
  g->h_round = pin_alloc(be, d, (size_t)BATCH * OUT);
  g->h_fill = pin_alloc(be, d, (size_t)BATCH * OUT);
  g->x = dev_alloc(be, d, (size_t)BATCH * IN * 4);
  g->w = dev_alloc(be, d, (size_t)OUT * IN * 4);
  g->b = dev_alloc(be, d, (size_t)OUT * 4);
  g->y = dev_alloc(be, d, (size_t)BATCH * OUT * 4);
  g->yb = dev_alloc(be, d, (size_t)BATCH * OUT * 2);
  g->y2 = dev_alloc(be, d, (size_t)BATCH * OUT * 4);
  g->fill = dev_alloc(be, d, (size_t)BATCH * OUT * 4);
}

static void bufs_close(const sp__backend *be, sp__bdevice *d, graph_bufs *g) {
  float *pins[] = {g->h_in, g->h_out, g->h_round, g->h_fill};
  for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++)
    SP_CHECK_OK(be->host_free_pinned(d, pins[i]));
  void *devs[] = {g->x, g->w, g->b, g->y, g->yb, g->y2, g->fill};
  for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) SP_CHECK_OK(be->mem_free(d, devs[i]));
}

/* The work of one forward, submitted to s (captured or not). */
static void submit_forward(const sp__backend *be, sp__bstream *s, const graph_bufs *g) {
  size_t ny = (size_t)BATCH * OUT;
  SP_CHECK_OK(be->memcpy_async(s, g->x, g->h_in, (size_t)BATCH * IN * 4));
  SP_CHECK_OK(be->memset_async(s, g->fill, 0x3F, ny * 4));
  sp__linear op = {.dtype = SP_F32, .batch = BATCH, .in_features = IN, .out_features = OUT,
                   .x = g->x, .w = g->w, .bias = g->b, .y = g->y, .relu = true};
  SP_CHECK_OK(be->linear_async(s, &op));
  SP_CHECK_OK(be->convert_async(s, g->yb, SP_BF16, g->y, SP_F32, ny));
  SP_CHECK_OK(be->convert_async(s, g->y2, SP_F32, g->yb, SP_BF16, ny));
  SP_CHECK_OK(be->memcpy_async(s, g->h_out, g->y, ny * 4));
  SP_CHECK_OK(be->memcpy_async(s, g->h_round, g->y2, ny * 4));
  SP_CHECK_OK(be->memcpy_async(s, g->h_fill, g->fill, ny * 4));
}

/* Checks the pinned outputs against relu(x·wᵀ + b) computed in double; returns mismatches. */
static unsigned check_forward(const char *what, const graph_bufs *g, const float *w,
                              const float *b) {
  unsigned bad = 0;
  float fill;
  memset(&fill, 0x3F, sizeof(fill));
  for (unsigned r = 0; r < BATCH; r++)
    for (unsigned o = 0; o < OUT; o++) {
      double acc = b[o];
      for (unsigned k = 0; k < IN; k++) acc += (double)g->h_in[r * IN + k] * (double)w[o * IN + k];
      double ref = acc > 0.0 ? acc : 0.0;
      size_t i = (size_t)r * OUT + o;
      double got = g->h_out[i], rounded = g->h_round[i], ref16 = bf16_round((float)ref);
      int ok = fabs(got - ref) <= 1e-4 * (1.0 + fabs(ref)) &&
               fabs(rounded - ref16) <= 1e-2 * (1.0 + fabs(ref)) &&
               memcmp(&g->h_fill[i], &fill, sizeof(fill)) == 0;
      if (!ok && bad++ < 5)
        print_error("%s: y[%u,%u]: f32 %.8g vs %.8g, bf16 %.8g vs %.8g, fill %.8g vs %.8g\n",
                    what, r, o, got, ref, rounded, ref16, (double)g->h_fill[i], (double)fill);
    }
  return bad;
}

/* Another thread allocating device memory and running its own stream during a capture. */
typedef struct side_work {
  const sp__backend *be;
  sp__bdevice *d;
  sp_status st;
} side_work;

static void *side_run(void *arg) {
  side_work *sw = arg;
  sp__bstream *s = NULL;
  void *p = NULL;
  uint32_t h[256], back[256];
  for (unsigned i = 0; i < 256; i++) h[i] = i * 2654435761u;
  sw->st = sw->be->stream_create(sw->d, 9, &s);
  if (sw->st != SP_OK) return NULL;
  sw->st = sw->be->mem_alloc(sw->d, sizeof(h), &p);
  if (sw->st == SP_OK) sw->st = sw->be->memcpy_async(s, p, h, sizeof(h));
  if (sw->st == SP_OK) sw->st = sw->be->memcpy_async(s, back, p, sizeof(h));
  if (sw->st == SP_OK) sw->st = sw->be->stream_sync(s);
  if (sw->st == SP_OK && memcmp(h, back, sizeof(h)) != 0) sw->st = SP_ERR_BACKEND;
  if (p) sw->be->mem_free(sw->d, p);
  sw->be->stream_destroy(s);
  return NULL;
}

static sp__bgraph *capture_forward(const sp__backend *be, sp__bdevice *d, sp__bstream *s,
                                   const graph_bufs *g) {
  SP_CHECK_OK(be->graph_capture_begin(s));
  side_work sw = {be, d, SP_OK};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, side_run, &sw), 0);
  submit_forward(be, s, g);
  pthread_join(th, NULL);
  if (sw.st != SP_OK) print_error("side thread during capture: %s\n", sp_status_str(sw.st));
  sp__bgraph *graph = NULL;
  SP_CHECK_OK(be->graph_capture_end(s, &graph));
  assert_non_null(graph);
  assert_int_equal(sw.st, SP_OK);
  return graph;
}

static void upload_params(const sp__backend *be, sp__bdevice *d, sp__bstream *s,
                          const graph_bufs *g, float *w, float *b, tu_rng *rng) {
  for (size_t i = 0; i < (size_t)OUT * IN; i++) w[i] = rand_unit(rng) * 0.25f;
  for (size_t i = 0; i < OUT; i++) b[i] = rand_unit(rng) * 0.5f;
  float *pw = pin_alloc(be, d, (size_t)OUT * IN), *pb = pin_alloc(be, d, OUT);
  memcpy(pw, w, (size_t)OUT * IN * 4);
  memcpy(pb, b, (size_t)OUT * 4);
  SP_CHECK_OK(be->memcpy_async(s, g->w, pw, (size_t)OUT * IN * 4));
  SP_CHECK_OK(be->memcpy_async(s, g->b, pb, (size_t)OUT * 4));
  SP_CHECK_OK(be->stream_sync(s));
  SP_CHECK_OK(be->host_free_pinned(d, pw));
  SP_CHECK_OK(be->host_free_pinned(d, pb));
}

static void fill_input(const graph_bufs *g, tu_rng *rng) {
  for (size_t i = 0; i < (size_t)BATCH * IN; i++) g->h_in[i] = rand_unit(rng);
}

static void replay_checked(const sp__backend *be, sp__bstream *s, sp__bgraph *graph,
                           const graph_bufs *g, const float *w, const float *b, tu_rng *rng) {
  for (unsigned it = 0; it < REPLAYS; it++) {
    fill_input(g, rng);
    memset(g->h_out, 0xFF, (size_t)BATCH * OUT * 4); /* NaN until the replay writes it */
    SP_CHECK_OK(be->memset_async(s, g->fill, 0, (size_t)BATCH * OUT * 4)); /* outside the graph */
    SP_CHECK_OK(be->graph_launch(graph, s));
    SP_CHECK_OK(be->stream_sync(s));
    char what[48];
    snprintf(what, sizeof(what), "replay %u", it);
    unsigned bad = check_forward(what, g, w, b);
    if (bad) fail_msg("%s: %u of %u outputs wrong", what, bad, BATCH * OUT);
  }
}

/* A sync inside a capture breaks it: capture_end reports SP_ERR_BACKEND, the stream still works. */
static void check_broken_capture(const sp__backend *be, sp__bstream *s, const graph_bufs *g) {
  SP_CHECK_OK(be->graph_capture_begin(s));
  SP_CHECK_OK(be->memset_async(s, g->fill, 0, 64));
  sp_status st = be->stream_sync(s); /* forbidden while capturing */
  if (st == SP_OK) print_message("note: stream_sync during capture returned SP_OK\n");
  sp__bgraph *graph = NULL;
  SP_CHECK_STATUS(be->graph_capture_end(s, &graph), SP_ERR_BACKEND);
  assert_null(graph);
  SP_CHECK_OK(be->memset_async(s, g->fill, 0x11, 64));
  SP_CHECK_OK(be->memcpy_async(s, g->h_fill, g->fill, 64));
  SP_CHECK_OK(be->stream_sync(s));
  const unsigned char *p = (const unsigned char *)g->h_fill;
  for (unsigned i = 0; i < 64; i++)
    if (p[i] != 0x11) fail_msg("after a broken capture: byte %u is 0x%02x, want 0x11", i, p[i]);
}

static void graph_on(const sp__backend *be) {
  int count = 0;
  SP_CHECK_OK(be->device_count(&count));
  if (count == 0) {
    print_message("%s: skipped: no device\n", be->name);
    return;
  }
  sp__bdevice *d = NULL;
  SP_CHECK_OK(be->device_open(0, &d));
  sp__bstream *s = NULL, *fresh = NULL;
  SP_CHECK_OK(be->stream_create(d, 1, &s));
  SP_CHECK_OK(be->stream_create(d, 2, &fresh));
  graph_bufs g;
  bufs_open(be, d, &g);
  tu_rng rng = {tu_seed() ^ 0x6772617068ull};
  float *w = malloc((size_t)OUT * IN * sizeof(*w)), *b = malloc(OUT * sizeof(*b));
  assert_non_null(w);
  assert_non_null(b);
  upload_params(be, d, s, &g, w, b, &rng);

  /* Capture on a stream that has never run a Linear: its cuBLASLt state is made before. */
  sp__bgraph *first = capture_forward(be, d, fresh, &g);
  replay_checked(be, fresh, first, &g, w, b, &rng);
  be->graph_destroy(first);

  /* Warm stream: run once eagerly, then capture and replay. */
  fill_input(&g, &rng);
  submit_forward(be, s, &g);
  SP_CHECK_OK(be->stream_sync(s));
  unsigned bad = check_forward("eager", &g, w, b);
  if (bad) fail_msg("eager forward: %u outputs wrong", bad);
  sp__bgraph *graph = capture_forward(be, d, s, &g);
  replay_checked(be, s, graph, &g, w, b, &rng);
  be->graph_destroy(graph);
  be->graph_destroy(NULL);

  check_broken_capture(be, s, &g);
  print_message("%s: %d replays checked on 2 streams, broken capture recovered\n", be->name,
                2 * REPLAYS);
  free(w);
  free(b);
  bufs_close(be, d, &g);
  be->stream_destroy(fresh);
  be->stream_destroy(s);
  be->device_close(d);
}

static void test_graph_replay(void **state) {
  (void)state;
  const char *names[4];
  int n = tu_backends(names);
  for (int i = 0; i < n; i++) {
    const sp__backend *be = NULL;
    SP_CHECK_OK(sp__backend_find(names[i], &be));
    if (!be->graph_capture_begin || !be->host_alloc_pinned) {
      print_message("%s: skipped: no graph support\n", be->name);
      continue;
    }
    graph_on(be);
  }
#ifdef SP_HAVE_CUDA
  int cuda = 0;
  if (sp_device_count("cuda", &cuda) == SP_OK && cuda == 0)
    print_message("cuda: skipped: no CUDA device\n");
#endif
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_validate),
      cmocka_unit_test(test_graph_replay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
