/* White-box tests of the backends' optional graph and pinned host memory slots.
 *
 * Goal: on every backend with graph slots (host and CUDA), a graph captured from memcpy (pinned
 * host -> device), memset, Linear (f32, bias + ReLU), f32 <-> bf16 conversions and memcpy (device
 * -> pinned host) replays correctly many times with new input data written into the captured host
 * buffer between launches; another thread may allocate device memory and run its own stream while
 * one thread captures (thread-local capture mode); a capture broken by a forbidden call (a sync)
 * fails at capture_end with SP_ERR_BACKEND and leaves the stream usable; a Linear on a stream whose
 * cuBLASLt state does not exist yet is capturable. On every backend: the table's optional groups
 * are all set or all NULL, and the validator rejects half-filled groups. The host backend checks
 * the capture contract of backend.h: each forbidden call during a capture (stream_sync,
 * stream_query, mem_alloc, mem_free, host_alloc_pinned, event_record on the capturing stream, a
 * wait on another stream's event, submission from another thread, destroying the stream, a
 * second capture on the same thread) is an assertion failure in debug builds and, without
 * asserts, returns SP_ERR_BACKEND and breaks the capture (capture_end fails, the stream works).
 * Pinned host buffers are refused by host_free_pinned when they are not live ones.
 *
 * Method: drive each compiled-in backend's table directly (no core). Inputs are seeded (tu_seed);
 * outputs are compared with a double-precision reference (f32: relative 1e-4, TF32 is off;
 * after the bf16 round trip: the reference rounded to bf16, 1e-2); failures print both values.
 * Host contract violations in debug builds run in a child process (this program, re-executed with
 * "--violate NAME"; stderr to a file) that must die of SIGABRT after logging "assertion failed"
 * with the violation named; without asserts each runs in-process and its statuses are checked.
 */
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
  sp__linear op = {.dtype = SP_F32,
                   .batch = BATCH,
                   .in_features = IN,
                   .out_features = OUT,
                   .x = g->x,
                   .w = g->w,
                   .bias = g->b,
                   .y = g->y,
                   .act = SP__ACT_RELU};
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
        print_error("%s: y[%u,%u]: f32 %.8g vs %.8g, bf16 %.8g vs %.8g, fill %.8g vs %.8g\n", what,
                    r, o, got, ref, rounded, ref16, (double)g->h_fill[i], (double)fill);
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

  if (SP_DEBUG >= 1 && !strcmp(be->name, "host")) {
    print_message(
        "host: a sync during capture asserts in debug builds: see "
        "test_host_capture_contract\n");
  } else {
    check_broken_capture(be, s, &g);
    print_message("%s: broken capture recovered\n", be->name);
  }
  print_message("%s: %d replays checked on 2 streams\n", be->name, 2 * REPLAYS);
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

/* ---- the host backend's capture contract -------------------------------------------------- */

typedef struct violation_env {
  const sp__backend *be;
  sp__bdevice *d;
  sp__bstream *s, *other;
  void *buf;      /* device, 256 bytes */
  sp__bevent *ev; /* recorded on other */
} violation_env;

static sp_status viol_sync(violation_env *v) { return v->be->stream_sync(v->s); }
static sp_status viol_query(violation_env *v) { return v->be->stream_query(v->s); }
static sp_status viol_mem_alloc(violation_env *v) {
  void *p = NULL;
  sp_status st = v->be->mem_alloc(v->d, 4096, &p);
  if (p) (void)v->be->mem_free(v->d, p);
  return st;
}
static sp_status viol_mem_free(violation_env *v) { return v->be->mem_free(v->d, v->buf); }
static sp_status viol_pinned(violation_env *v) {
  void *p = NULL;
  sp_status st = v->be->host_alloc_pinned(v->d, 4096, &p);
  if (p) (void)v->be->host_free_pinned(v->d, p);
  return st;
}
static sp_status viol_record(violation_env *v) { return v->be->event_record(v->ev, v->s); }
static sp_status viol_wait(violation_env *v) { return v->be->stream_wait_event(v->s, v->ev); }
static sp_status viol_second_capture(violation_env *v) {
  return v->be->graph_capture_begin(v->other);
}

static void *viol_thread_main(void *arg) {
  violation_env *v = arg;
  static sp_status st;
  st = v->be->memset_async(v->s, v->buf, 0, 256);
  return &st;
}
static sp_status viol_other_thread(violation_env *v) {
  pthread_t t;
  void *ret = NULL;
  if (pthread_create(&t, NULL, viol_thread_main, v) != 0) return SP_ERR_HOST_MEMORY;
  pthread_join(t, &ret);
  return *(sp_status *)ret;
}
static sp_status viol_destroy(violation_env *v) {
  v->be->stream_destroy(v->s);
  v->s = NULL;
  return SP_ERR_BACKEND; /* no status to return: in release builds the capture is dropped */
}

typedef struct violation {
  const char *name;
  const char *says; /* what the assertion message must contain */
  sp_status (*run)(violation_env *v);
} violation;

static const violation violations[] = {
    {"sync", "sync of a capturing stream", viol_sync},
    {"query", "query of a capturing stream", viol_query},
    {"mem_alloc", "raw allocation during a capture", viol_mem_alloc},
    {"mem_free", "raw free during a capture", viol_mem_free},
    {"pinned", "pinned allocation during a capture", viol_pinned},
    {"event_record", "event record on a capturing stream", viol_record},
    {"wait_other", "waits on another stream's event", viol_wait},
    {"other_thread", "from another thread", viol_other_thread},
    {"second_capture", "already captures a stream", viol_second_capture},
    {"destroy", "destroying a capturing stream", viol_destroy},
};
enum { N_VIOLATIONS = sizeof(violations) / sizeof(violations[0]) };

static void viol_open(violation_env *v) {
  SP_CHECK_OK(sp__backend_find("host", &v->be));
  SP_CHECK_OK(v->be->device_open(0, &v->d));
  SP_CHECK_OK(v->be->stream_create(v->d, 1, &v->s));
  SP_CHECK_OK(v->be->stream_create(v->d, 2, &v->other));
  SP_CHECK_OK(v->be->mem_alloc(v->d, 256, &v->buf));
  SP_CHECK_OK(v->be->event_create(v->d, 0, &v->ev));
  SP_CHECK_OK(v->be->memset_async(v->other, v->buf, 1, 256));
  SP_CHECK_OK(v->be->event_record(v->ev, v->other));
  SP_CHECK_OK(v->be->stream_sync(v->other)); /* buf is settled before s reads it */
}

static void viol_close(violation_env *v) {
  if (v->s) SP_CHECK_OK(v->be->stream_sync(v->s));
  SP_CHECK_OK(v->be->stream_sync(v->other));
  v->be->event_destroy(v->ev);
  (void)v->be->mem_free(v->d, v->buf); /* may be freed already (mem_free case) */
  if (v->s) v->be->stream_destroy(v->s);
  v->be->stream_destroy(v->other);
  v->be->device_close(v->d);
}

/* Runs violation k inside a capture of v->s. In a debug build it does not return (abort). */
static void viol_run(violation_env *v, const violation *k) {
  SP_CHECK_OK(v->be->graph_capture_begin(v->s));
  SP_CHECK_OK(v->be->memset_async(v->s, v->buf, 0x22, 256)); /* recorded */
  sp_status st = k->run(v);
  if (st != SP_ERR_BACKEND)
    fail_msg("%s during capture returned %s, want SP_ERR_BACKEND", k->name, sp_status_str(st));
  if (!v->s) return; /* destroyed: nothing to end */
  sp__bgraph *g = NULL;
  SP_CHECK_STATUS(v->be->graph_capture_end(v->s, &g), SP_ERR_BACKEND);
  assert_null(g);
  assert_non_null(strstr(sp_last_error(), "invalidated"));
  /* The stream works again, and the recorded memset never ran. */
  unsigned char back[256];
  void *pin = NULL;
  SP_CHECK_OK(v->be->host_alloc_pinned(v->d, sizeof(back), &pin));
  SP_CHECK_OK(v->be->memcpy_async(v->s, pin, v->buf, sizeof(back)));
  SP_CHECK_OK(v->be->stream_sync(v->s));
  memcpy(back, pin, sizeof(back));
  SP_CHECK_OK(v->be->host_free_pinned(v->d, pin));
  if (back[0] == 0x22) fail_msg("%s: the broken capture's memset ran", k->name);
}

static void log_to_stderr(void *user, sp_log_level level, const char *msg) {
  (void)user;
  (void)level;
  fprintf(stderr, "%s\n", msg);
}

/* The child's side of "--violate NAME": abort (debug build) or exit 0 after checking statuses. */
static int violate_child(const char *name) {
  sp_log_set_hook(log_to_stderr, NULL, SP_LOG_DEBUG);
  for (unsigned i = 0; i < N_VIOLATIONS; i++) {
    if (strcmp(violations[i].name, name)) continue;
    violation_env v = {0};
    viol_open(&v);
    viol_run(&v, &violations[i]);
    viol_close(&v);
    return 3; /* reached only without asserts; the parent expects an abort in debug builds */
  }
  return 4;
}

/* Runs "--violate k" in a child; checks it died of SIGABRT after naming the violation. */
static void expect_abort(const violation *k) {
  char log[64];
  snprintf(log, sizeof(log), "/tmp/sp_violate_%d_%s.log", (int)getpid(), k->name);
  posix_spawn_file_actions_t fa;
  assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
  assert_int_equal(
      posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
  char *argv[] = {(char *)"backend_graph", (char *)"--violate", (char *)k->name, NULL};
  extern char **environ;
  pid_t pid;
  int e = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (e) fail_msg("posix_spawn: %s", strerror(e));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  char text[4096] = "";
  FILE *f = fopen(log, "r");
  if (f) {
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
  }
  unlink(log);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
    fail_msg("%s: the child %s %d, want death by SIGABRT; its stderr:\n%s", k->name,
             WIFSIGNALED(status) ? "died of signal" : "exited with",
             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), text);
  if (!strstr(text, "assertion failed") || !strstr(text, k->says))
    fail_msg("%s: the child's log does not name the violation \"%s\":\n%s", k->name, k->says, text);
}

static void test_host_capture_contract(void **state) {
  (void)state;
  for (unsigned i = 0; i < N_VIOLATIONS; i++) {
    if (SP_DEBUG >= 1) {
      expect_abort(&violations[i]);
    } else {
      violation_env v = {0};
      viol_open(&v);
      viol_run(&v, &violations[i]);
      viol_close(&v);
    }
  }
  print_message("host: %u capture-contract violations %s\n", (unsigned)N_VIOLATIONS,
                SP_DEBUG >= 1 ? "abort with their assertion" : "return SP_ERR_BACKEND");
}

/* host_free_pinned refuses what host_alloc_pinned did not hand out, and a second free. */
static void test_host_pinned(void **state) {
  (void)state;
  const sp__backend *be = NULL;
  SP_CHECK_OK(sp__backend_find("host", &be));
  sp__bdevice *d = NULL;
  SP_CHECK_OK(be->device_open(0, &d));
  void *p = NULL;
  SP_CHECK_STATUS(be->host_alloc_pinned(d, 0, &p), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(be->host_alloc_pinned(d, 1000, &p));
  memset(p, 0xAB, 1000);
  char stack[128];
  SP_CHECK_STATUS(be->host_free_pinned(d, stack + 64), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(be->host_free_pinned(d, NULL));
  SP_CHECK_OK(be->host_free_pinned(d, p));
  be->device_close(d);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--violate")) return violate_child(argv[2]);
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_validate),
      cmocka_unit_test(test_graph_replay),
      cmocka_unit_test(test_host_capture_contract),
      cmocka_unit_test(test_host_pinned),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
