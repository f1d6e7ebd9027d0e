/* The countdown loop: every backend slot and host allocation, failed at each of its calls.
 *
 * Goal: a failure of any status-returning backend slot (or of a host allocation) inside
 * sp_device_open (two host devices), events around a host function (record, wait, sync, elapsed),
 * sp_memcpy_peer_async between the devices, sp_alloc, sp_record_stream, sp_free, a segment's free
 * pages decommitted (sp_empty_cache) and committed again (sp_alloc), sp_model_load (f32 and bf16
 * from a safetensors file), sp_model_infer, sp_model_forward, sp_batcher_create, sp_batcher_infer,
 * sp_resident_open, sp_resident_forward, sp_encoder_load (the tiny BERT folder) or
 * sp_encoder_embed either returns the status that failure documents (the slot's, see
 * TU_FAULT_SLOTS; host memory: SP_ERR_HOST_MEMORY) with a non-empty message, or is absorbed with a
 * correct result; the same call made again without injection succeeds; and when the script is
 * done, nothing is left behind: every backend object the wrapper saw created was destroyed, every
 * host block allocated through the hook was freed (and ASan's leak check at exit agrees, under
 * make asan). Method: the fault-injecting table (tests/common/internal/tu_backend_faults.h) is
 * installed over the host backend and the counting allocator (tu_host_faults.h) over host memory.
 * For each status-returning slot the host table has (and for host memory), for N = 0, 1, 2, ...:
 * arm the Nth call of that slot to fail, run the whole script; the first step that fails must fail
 * as above, then it is retried disarmed and must succeed, and the script goes on. The loop for a
 * slot ends with the first run in which no injected failure was hit (the script makes fewer than
 * N+1 calls). The script must call every status slot the host table has at least once (a slot it
 * never calls fails the test: extend the script when a slot is added). The teardown
 * (sp_batcher_destroy, sp_resident_close, sp_model_free, sp_free, sp_device_close) runs armed too:
 * it returns nothing, so a failure there must only leave nothing behind. Both modes run: one-shot
 * (only call N fails) and persistent (call N and every later one fails until the step has returned
 * and is retried disarmed). Outputs of infer/forward/batcher, events and the peer copy are
 * checked, so an absorbed failure cannot hide a wrong answer.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"
#include "testutil.h"
#include "tu_backend_faults.h"
#include "tu_host_faults.h"
#include "tu_mlp.h"

enum { IN = 8, HID = 16, OUT = 4, NL = 2, ROWS = 3, RUNS_MAX = 5000 };
static const unsigned dims[NL + 1] = {IN, HID, OUT};

static tu_mlp mlp;
static char path[64];
static float x[ROWS * IN];

typedef struct script {
  sp_device *dev, *dev2; /* host devices 0 and 1 */
  void *p;
  sp_model *m32, *m16;
  sp_batcher *b;
  sp_resident *res;
  sp_encoder *enc;
} script;

static char wrong[256]; /* a wrong answer seen by a step that returned SP_OK */

/* ---- the steps: each leaves *c as it was when it fails ------------------------------------ */

/* A step's cleanup and result: frees its two blocks (NULL: nothing), then returns the first
 * failure: the step's own st, with its message msg put back over the cleanup's, else the frees'. */
static sp_status step_end(sp_status st, const char *msg, sp_device *d1, void *p1, sp_device *d2,
                          void *p2) {
  sp_status fst = sp_free(d1, p1);
  if (fst == SP_OK) fst = sp_free(d2, p2);
  if (st == SP_OK) return fst;
  (void)sp__fail(st, "%s", msg);
  return st;
}

static sp_status step_open(script *c) {
  sp_device_config cfg = {.backend = "host", .streams = 4, .stream_mode = SP_STREAMS_ROUND_ROBIN};
  return sp_device_open(&cfg, &c->dev);
}

static sp_status step_open2(script *c) {
  sp_device_config cfg = {.backend = "host", .index = 1, .streams = 2};
  return sp_device_open(&cfg, &c->dev2);
}

static void count_fn(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

/* Timing events around a host function, a cross-stream wait, sync and elapsed time. */
static sp_status step_events(script *c) {
  sp_stream *s = sp_stream_default(c->dev), *o = NULL;
  sp_event a = {0}, b = {0};
  atomic_int ran = 0;
  float ms = -1;
  sp_status st = sp_stream_current(c->dev, &o);
  if (st == SP_OK) st = sp_event_acquire(c->dev, SP_EVENT_TIMING, &a);
  if (st == SP_OK) st = sp_event_acquire(c->dev, SP_EVENT_TIMING, &b);
  if (st == SP_OK) st = sp_event_record(a, s);
  if (st == SP_OK) st = sp_launch_host_func(s, count_fn, &ran);
  if (st == SP_OK) st = sp_event_record(b, s);
  if (st == SP_OK) st = sp_stream_wait_event(o, b);
  if (st == SP_OK) st = sp_event_sync(c->dev, b);
  if (st == SP_OK) st = sp_event_elapsed_ms(c->dev, a, b, &ms);
  if (st == SP_OK && (atomic_load(&ran) != 1 || !(ms >= 0)))
    snprintf(wrong, sizeof(wrong), "events: host function ran %d times, elapsed %g ms",
             atomic_load(&ran), (double)ms);
  char msg[512];
  snprintf(msg, sizeof(msg), "%s", sp_last_error());
  if (st != SP_OK) { /* count_fn's &ran must not outlive this frame (on success b covers it) */
    (void)sp_stream_sync(s);
    if (o) (void)sp_stream_sync(o);
  }
  if (a.id) (void)sp_event_release(c->dev, a);
  if (b.id) (void)sp_event_release(c->dev, b);
  if (st != SP_OK) (void)sp__fail(st, "%s", msg);
  return st;
}

/* A device-to-device copy between the two host devices (the backend's memcpy_peer_async). */
static sp_status step_peer(script *c) {
  enum { N = 8192 };
  sp_stream *s = sp_stream_default(c->dev), *s2 = sp_stream_default(c->dev2);
  void *src = NULL, *dst = NULL;
  unsigned char back[N];
  memset(back, 0, sizeof(back));
  sp_status st = sp_alloc(c->dev2, N, s2, &src);
  if (st == SP_OK) st = sp_memset_async(s2, src, 0x6b, N);
  if (st == SP_OK) st = sp_stream_sync(s2);
  if (st == SP_OK) st = sp_alloc(c->dev, N, s, &dst);
  if (st == SP_OK) st = sp_memcpy_peer_async(s, dst, c->dev2, src, N);
  if (st == SP_OK) st = sp_memcpy_async(s, back, dst, N);
  if (st == SP_OK) st = sp_stream_sync(s);
  if (st == SP_OK && back[0] != 0x6b && back[N - 1] != 0x6b)
    snprintf(wrong, sizeof(wrong), "peer copy: got 0x%02x 0x%02x, want 0x6b", back[0], back[N - 1]);
  char msg[512];
  snprintf(msg, sizeof(msg), "%s", sp_last_error());
  if (st != SP_OK) { /* back[] must not be written after this frame (on success s is synced) */
    (void)sp_stream_sync(s);
    (void)sp_stream_sync(s2);
  }
  return step_end(st, msg, c->dev2, src, c->dev, dst);
}

static sp_status step_alloc(script *c) { return sp_alloc(c->dev, 1u << 20, NULL, &c->p); }

static sp_status step_use_and_record(script *c) {
  sp_stream *s = NULL;
  sp_status st = sp_stream_current(c->dev, &s);
  if (st == SP_OK) st = sp_memset_async(s, c->p, 0x5a, 4096);
  sp_stream *other = sp_stream_default(c->dev);
  if (st == SP_OK) st = sp_record_stream(c->dev, c->p, other);
  if (st == SP_OK) st = sp_memset_async(other, (char *)c->p + 4096, 0x33, 4096);
  return st;
}

static sp_status step_free(script *c) {
  sp_status st = sp_free(c->dev, c->p);
  if (st == SP_OK) c->p = NULL;
  return st;
}

/* Pages of a segment decommitted and committed again: a 3 MiB block pins a 20 MiB segment,
 * sp_empty_cache gives back the segment's whole free pages (mem_decommit), an 8 MiB block carved
 * from them commits them again (mem_commit) and must hold what is written to it. */
static sp_status step_pages(script *c) {
  enum { PIN = 3u << 20, BIG = 8u << 20 };
  static unsigned char back[4096];
  sp_stream *s = NULL;
  void *pin = NULL, *big = NULL;
  sp_status st = sp_stream_current(c->dev, &s);
  if (st == SP_OK) st = sp_alloc(c->dev, PIN, s, &pin);
  if (st == SP_OK) st = sp_empty_cache(c->dev);
  if (st == SP_OK) st = sp_alloc(c->dev, BIG, s, &big);
  if (st == SP_OK) st = sp_memset_async(s, big, 0x4c, BIG);
  if (st == SP_OK) st = sp_memcpy_async(s, back, (char *)big + BIG - sizeof(back), sizeof(back));
  if (st == SP_OK) st = sp_stream_sync(s);
  if (st == SP_OK && (back[0] != 0x4c || back[sizeof(back) - 1] != 0x4c))
    snprintf(wrong, sizeof(wrong), "pages: the recommitted block reads 0x%02x 0x%02x, want 0x4c",
             back[0], back[sizeof(back) - 1]);
  char msg[512];
  snprintf(msg, sizeof(msg), "%s", sp_last_error());
  if (s && st != SP_OK) (void)sp_stream_sync(s);
  return step_end(st, msg, c->dev, big, c->dev, pin);
}

static sp_status step_load(script *c) { return sp_model_load(c->dev, path, SP_F32, &c->m32); }
static sp_status step_load_bf16(script *c) { return sp_model_load(c->dev, path, SP_BF16, &c->m16); }

/* The first bad output row/column, as a message; "" if all match. */
static const char *check_out(const float *y, double tol) {
  static char msg[160];
  msg[0] = 0;
  for (unsigned r = 0; r < ROWS && !msg[0]; r++) {
    double want[OUT];
    tu_mlp_reference(&mlp, x + r * IN, want);
    for (unsigned o = 0; o < OUT; o++)
      if (!(fabs(y[r * OUT + o] - want[o]) <= tol * (1 + fabs(want[o])))) {
        snprintf(msg, sizeof(msg), "row %u out %u: expected %.7g, got %.7g", r, o, want[o],
                 (double)y[r * OUT + o]);
        break;
      }
  }
  return msg;
}

static sp_status step_infer(script *c) {
  float y[ROWS * OUT];
  memset(y, 0xff, sizeof(y));
  sp_status st = sp_model_infer(c->m32, x, y, ROWS);
  const char *bad = st == SP_OK ? check_out(y, 1e-5) : "";
  if (bad[0]) snprintf(wrong, sizeof(wrong), "sp_model_infer: %s", bad);
  if (st == SP_OK) {
    memset(y, 0xff, sizeof(y));
    st = sp_model_infer(c->m16, x, y, ROWS);
    bad = st == SP_OK ? check_out(y, 3e-2) : "";
    if (bad[0]) snprintf(wrong, sizeof(wrong), "sp_model_infer (bf16): %s", bad);
  }
  return st;
}

static sp_status step_forward(script *c) {
  sp_stream *s = NULL;
  void *din = NULL, *dout = NULL;
  float y[ROWS * OUT];
  memset(y, 0xff, sizeof(y));
  sp_status st = sp_stream_current(c->dev, &s);
  if (st == SP_OK) st = sp_alloc(c->dev, sizeof(x), s, &din);
  if (st == SP_OK) st = sp_alloc(c->dev, sizeof(y), s, &dout);
  if (st == SP_OK) st = sp_memcpy_async(s, din, x, sizeof(x));
  if (st == SP_OK) st = sp_model_forward(c->m32, s, din, dout, ROWS);
  if (st == SP_OK) st = sp_memcpy_async(s, y, dout, sizeof(y));
  if (st == SP_OK) st = sp_stream_sync(s);
  if (st == SP_OK) {
    const char *bad = check_out(y, 1e-5);
    if (bad[0]) snprintf(wrong, sizeof(wrong), "sp_model_forward: %s", bad);
  }
  /* The step's own cleanup: a failure here is reported only if nothing failed before. */
  char msg[512];
  snprintf(msg, sizeof(msg), "%s", sp_last_error());
  if (s && st != SP_OK) (void)sp_stream_sync(s); /* before freeing what queued work may touch */
  return step_end(st, msg, c->dev, din, c->dev, dout);
}

static sp_status step_batcher_create(script *c) {
  sp_batcher_config cfg = {.max_batch = 4, .max_delay_us = 100, .workers = 1};
  return sp_batcher_create(c->m32, &cfg, &c->b);
}

static sp_status step_batcher_infer(script *c) {
  float y[ROWS * OUT];
  memset(y, 0xff, sizeof(y));
  sp_status st = SP_OK;
  for (unsigned r = 0; r < ROWS && st == SP_OK; r++)
    st = sp_batcher_infer(c->b, x + r * IN, y + r * OUT);
  const char *bad = st == SP_OK ? check_out(y, 1e-5) : "";
  if (bad[0]) snprintf(wrong, sizeof(wrong), "sp_batcher_infer: %s", bad);
  return st;
}

static sp_status step_resident_open(script *c) { return sp_resident_open(c->m32, &c->res); }

/* ROWS forwards through the resident, one row each, from and to device blocks. */
static sp_status step_resident_forward(script *c) {
  sp_stream *s = NULL;
  float *din = NULL, *dout = NULL, y[ROWS * OUT];
  memset(y, 0xff, sizeof(y));
  sp_status st = sp_stream_current(c->dev, &s);
  if (st == SP_OK) st = sp_alloc(c->dev, sizeof(x), s, (void **)&din);
  if (st == SP_OK) st = sp_alloc(c->dev, sizeof(y), s, (void **)&dout);
  if (st == SP_OK) st = sp_memcpy_async(s, din, x, sizeof(x));
  if (st == SP_OK) st = sp_stream_sync(s);
  for (unsigned r = 0; r < ROWS && st == SP_OK; r++)
    st = sp_resident_forward(c->res, din + r * IN, dout + r * OUT);
  if (st == SP_OK) st = sp_memcpy_async(s, y, dout, sizeof(y));
  if (st == SP_OK) st = sp_stream_sync(s);
  if (st == SP_OK) {
    const char *bad = check_out(y, 1e-5);
    if (bad[0]) snprintf(wrong, sizeof(wrong), "sp_resident_forward: %s", bad);
  }
  char msg[512];
  snprintf(msg, sizeof(msg), "%s", sp_last_error());
  if (s && st != SP_OK) (void)sp_stream_sync(s);
  return step_end(st, msg, c->dev, din, c->dev, dout);
}

/* The tiny PyTorch BERT of tests/fixtures/encoder (2 layers, hidden 32). */
#define ENC_DIR SP_TEST_SOURCE_DIR "/fixtures/encoder/tiny_bert"
enum { ENC_DIM = 32, ENC_TEXTS = 3 };
static const char *const enc_texts[ENC_TEXTS] = {"w5 w6 w7", "", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"};
static float enc_ref[ENC_TEXTS * ENC_DIM]; /* from the clean run in setup */
static int enc_ref_set;

static sp_status step_enc_load(script *c) {
  return sp_encoder_load(c->dev, ENC_DIR, SP_F32, &c->enc);
}

static sp_status step_enc_embed(script *c) {
  float y[ENC_TEXTS * ENC_DIM];
  memset(y, 0xff, sizeof(y));
  sp_status st = sp_encoder_embed(c->enc, enc_texts, ENC_TEXTS, y);
  if (st != SP_OK) return st;
  if (!enc_ref_set) {
    memcpy(enc_ref, y, sizeof(y));
    enc_ref_set = 1;
  }
  for (unsigned i = 0; i < ENC_TEXTS * ENC_DIM; i++)
    if (!(fabs(y[i] - enc_ref[i]) <= 1e-5 * (1 + fabs(enc_ref[i])))) {
      snprintf(wrong, sizeof(wrong), "sp_encoder_embed: element %u is %g, clean run %g", i,
               (double)y[i], (double)enc_ref[i]);
      break;
    }
  return SP_OK;
}

typedef struct step {
  const char *name;
  sp_status (*fn)(script *c);
} step;

static const step steps[] = {
    {"sp_device_open", step_open},
    {"sp_device_open (host device 1)", step_open2},
    {"events + host function", step_events},
    {"sp_memcpy_peer_async", step_peer},
    {"sp_alloc", step_alloc},
    {"memset + sp_record_stream", step_use_and_record},
    {"sp_free", step_free},
    {"page decommit + commit", step_pages},
    {"sp_model_load f32", step_load},
    {"sp_model_load bf16", step_load_bf16},
    {"sp_model_infer", step_infer},
    {"sp_model_forward", step_forward},
    {"sp_batcher_create", step_batcher_create},
    {"sp_batcher_infer", step_batcher_infer},
    {"sp_resident_open", step_resident_open},
    {"sp_resident_forward", step_resident_forward},
    {"sp_encoder_load", step_enc_load},
    {"sp_encoder_embed", step_enc_embed},
};
enum { STEPS = sizeof(steps) / sizeof(steps[0]) };

static void script_close(script *c) {
  sp_encoder_free(c->enc);
  sp_batcher_destroy(c->b);
  sp_resident_close(c->res);
  sp_model_free(c->m16);
  sp_model_free(c->m32);
  if (c->p) (void)sp_free(c->dev, c->p);
  sp_device_close(c->dev2);
  sp_device_close(c->dev);
}

/* ---- the loop ------------------------------------------------------------------------------- */

typedef struct fault {
  const char *what; /* slot name or "host memory" */
  int host;         /* 1: host memory, 0: backend slot */
  tu_slot slot;
  sp_status want;
} fault;

static void arm(const fault *f, unsigned long n, int persist) {
  if (f->host) tu_hostmem_arm(n, 0, persist);
  else tu_fault_arm(f->slot, n, persist);
}
static void disarm(void) {
  tu_hostmem_disarm();
  tu_fault_disarm();
}
static unsigned long hits(const fault *f) { return f->host ? tu_hostmem_hits() : tu_fault_hits(); }

typedef struct tally {
  unsigned long runs, returned, absorbed, in_close;
} tally;

/* One run with call n of f failing; returns the number of injected failures hit. */
static unsigned long run_once(const fault *f, unsigned long n, int persist, tally *t) {
  script c;
  memset(&c, 0, sizeof(c));
  long host_before = tu_hostmem_live();
  wrong[0] = 0;
  arm(f, n, persist);
  int failed = 0;
  for (unsigned i = 0; i < STEPS; i++) {
    unsigned long h0 = hits(f);
    sp_status st = steps[i].fn(&c);
    if (wrong[0])
      fail_msg("%s call %lu (%s): step %s returned SP_OK with a wrong answer: %s", f->what, n,
               persist ? "persistent" : "one-shot", steps[i].name, wrong);
    if (st == SP_OK) {
      if (hits(f) > h0 && !failed) t->absorbed++;
      continue;
    }
    const char *msg = sp_last_error();
    if (failed || hits(f) == h0)
      fail_msg("%s call %lu: step %s failed without an injected failure of its own: %s: %s",
               f->what, n, steps[i].name, sp_status_str(st), msg);
    if (st != f->want)
      fail_msg("%s call %lu (%s): step %s returned %s, expected %s: %s", f->what, n,
               persist ? "persistent" : "one-shot", steps[i].name, sp_status_str(st),
               sp_status_str(f->want), msg);
    if (!msg[0])
      fail_msg("%s call %lu: step %s failed with an empty message", f->what, n, steps[i].name);
    failed = 1;
    t->returned++;
    disarm();
    st = steps[i].fn(&c); /* the same call, no injection: must succeed */
    if (st != SP_OK)
      fail_msg("%s call %lu: step %s failed again without injection: %s: %s", f->what, n,
               steps[i].name, sp_status_str(st), sp_last_error());
    if (wrong[0]) fail_msg("%s call %lu: retried step %s: %s", f->what, n, steps[i].name, wrong);
  }
  unsigned long h0 = hits(f);
  script_close(&c); /* still armed: the void teardown calls must not leak when a slot fails */
  unsigned long h = hits(f);
  if (h > h0) t->in_close++;
  disarm();
  t->runs++;
  tu_fault_live l = tu_fault_live_get();
  if (l.devices || l.streams || l.events || l.segments || l.pinned || l.graphs)
    fail_msg(
        "%s call %lu: after close, live: %ld devices %ld streams %ld events %ld segments "
        "%ld pinned %ld graphs",
        f->what, n, l.devices, l.streams, l.events, l.segments, l.pinned, l.graphs);
  if (tu_hostmem_live() != host_before)
    fail_msg("%s call %lu: %ld host blocks leaked", f->what, n, tu_hostmem_live() - host_before);
  return h;
}

static void countdown(const fault *f, int persist) {
  tally t = {0, 0, 0, 0};
  unsigned long n = 0;
  for (; n < RUNS_MAX; n++)
    if (run_once(f, n, persist, &t) == 0) break;
  if (n == RUNS_MAX) fail_msg("%s: still hitting injected failures after %lu runs", f->what, n);
  if (n == 0) fail_msg("%s: the script never calls it, so no failure of it is tested", f->what);
  print_message("%-19s %-10s %4lu calls: %4lu returned the error, %4lu absorbed, %4lu in close\n",
                f->what, persist ? "persistent" : "one-shot", n, t.returned, t.absorbed,
                t.in_close);
}

static void countdown_all(int persist) {
  for (int s = 0; s < TU_SLOT_COUNT; s++) {
    if (!tu_slot_present((tu_slot)s)) {
      print_message("%-20s absent in the host table: not wrapped\n", tu_slot_name((tu_slot)s));
      continue;
    }
    fault f = {tu_slot_name((tu_slot)s), 0, (tu_slot)s, tu_slot_status((tu_slot)s)};
    countdown(&f, persist);
  }
  fault hm = {"host memory", 1, TU_SLOT_COUNT, SP_ERR_HOST_MEMORY};
  countdown(&hm, persist);
}

static int setup(void **state) {
  (void)state;
  tu_mlp_seeded(&mlp, dims, NL, tu_seed());
  snprintf(path, sizeof(path), "/tmp/sp_fault_countdown_%d.safetensors", (int)getpid());
  if (tu_mlp_write(&mlp, path)) return -1;
  tu_rng r = {tu_seed() + 1};
  for (unsigned i = 0; i < ROWS * IN; i++) x[i] = (float)((double)tu_rng_below(&r, 4001) / 1e3 - 2);
  tu_hostmem_install();
  if (tu_fault_install("host") != SP_OK) return -1;
  /* One clean run first: process-wide state made once on first use (this thread's records)
   * exists before the runs whose host blocks are counted. */
  script c;
  memset(&c, 0, sizeof(c));
  for (unsigned i = 0; i < STEPS; i++)
    if (steps[i].fn(&c) != SP_OK || wrong[0]) {
      fprintf(stderr, "clean run: step %s: %s %s\n", steps[i].name, sp_last_error(), wrong);
      return -1;
    }
  script_close(&c);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  tu_fault_uninstall();
  tu_hostmem_uninstall();
  unlink(path);
  return 0;
}

static void test_one_shot(void **state) {
  (void)state;
  countdown_all(0);
}

static void test_persistent(void **state) {
  (void)state;
  countdown_all(1);
}

int main(void) {
  setenv("STREAMPOOL_HOST_DEVICES", "2", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_shot),
      cmocka_unit_test(test_persistent),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
