/* Goal: after fork(), every call in the child on a device the parent opened returns
 * SP_ERR_FORKED (and close only forgets it), while a device the child opens itself works; the
 * parent's device is unaffected.
 * Method: the parent opens a device, binds a stream, allocates, records an event after a memset,
 * waits for it and lets its threads settle (so none holds a lock at fork), then forks.
 * The child checks each call's status and copies a seeded pattern through its own device, and
 * reports the number of the first failed check as its exit status (0: all passed); under TSan,
 * which cannot start threads in a child of a threaded parent, it skips its own device. The parent
 * checks the exit status and then uses its device again.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static int child_checks(sp_device *parent, sp_stream *ps, sp_event pev, void *pblock) {
  sp_stream *s = NULL;
  sp_event ev = {0};
  void *p = NULL;
  size_t f, t;
  if (sp_stream_current(parent, &s) != SP_ERR_FORKED) return 1;
  if (sp_event_acquire(parent, 0, &ev) != SP_ERR_FORKED) return 2;
  if (sp_event_query(parent, pev) != SP_ERR_FORKED) return 3;
  if (sp_device_sync(parent) != SP_ERR_FORKED) return 4;
  if (sp_memset_async(ps, pblock, 0, 16) != SP_ERR_FORKED) return 5;
  if (sp_stream_sync(ps) != SP_ERR_FORKED) return 6;
  if (sp_alloc(parent, 64, NULL, &p) != SP_ERR_FORKED) return 7;
  if (sp_free(parent, pblock) != SP_ERR_FORKED) return 8;
  if (sp_device_memory_info(parent, &f, &t) != SP_ERR_FORKED) return 9;
  if (sp_event_record(pev, ps) != SP_ERR_FORKED) return 10;
  if (sp_stream_set_current(parent, ps) != SP_ERR_FORKED) return 11;
  if (!strstr(sp_last_error(), "fork")) return 12;
  sp_device_close(parent);       /* forgets only */
  if (tu_under_tsan()) return 0; /* TSan cannot start threads in a child of a threaded parent */

  sp_device_config cfg = {.backend = "host", .streams = 4};
  sp_device *dev = NULL;
  if (sp_device_open(&cfg, &dev) != SP_OK) return 20;
  if (sp_stream_current(dev, &s) != SP_OK) return 21;
  enum { N = 4096 };
  unsigned char src[N], dst[N];
  tu_rng r = {tu_seed() ^ 0xF0F0};
  for (int i = 0; i < N; i++) src[i] = (unsigned char)tu_rng_next(&r);
  if (sp_alloc(dev, N, s, &p) != SP_OK) return 22;
  if (sp_memcpy_async(s, p, src, N) != SP_OK) return 23;
  if (sp_memcpy_async(s, dst, p, N) != SP_OK) return 24;
  if (sp_event_acquire(dev, 0, &ev) != SP_OK || sp_event_record(ev, s) != SP_OK) return 25;
  if (sp_event_sync(dev, ev) != SP_OK) return 26;
  if (memcmp(src, dst, N)) return 27;
  if (sp_free(dev, p) != SP_OK || sp_event_release(dev, ev) != SP_OK) return 28;
  sp_device_close(dev);
  return 0;
}

static void fork_child(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s = NULL;
  void *block = NULL;
  sp_event ev = {0};
  SP_CHECK_OK(sp_stream_current(dev, &s));
  SP_CHECK_OK(sp_alloc(dev, 1024, s, &block));
  SP_CHECK_OK(sp_memset_async(s, block, 7, 1024));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &ev));
  SP_CHECK_OK(sp_event_record(ev, s));
  /* The parent's threads idle at fork: a lock one of them holds at fork() stays held in the child
   * (ASan's allocator takes no fork handlers: a worker caught inside malloc hung the child's
   * first allocation in about half of the ASan runs). */
  SP_CHECK_OK(sp_event_sync(dev, ev));
  struct timespec settle = {0, 30000000};
  nanosleep(&settle, NULL);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(child_checks(dev, s, ev, block));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status)) fail_msg("child did not exit normally (status 0x%x)", status);
  if (WEXITSTATUS(status)) fail_msg("child check %d failed", WEXITSTATUS(status));
  if (tu_under_tsan()) printf("under TSan the child does not open a device of its own\n");
  /* The parent's device still works. */
  unsigned char out[1024];
  SP_CHECK_OK(sp_memcpy_async(s, out, block, sizeof(out)));
  SP_CHECK_OK(sp_event_record(ev, s));
  SP_CHECK_OK(sp_event_sync(dev, ev));
  for (size_t i = 0; i < sizeof(out); i++)
    if (out[i] != 7) fail_msg("parent byte %zu: %u, expected 7", i, out[i]);
  SP_CHECK_OK(sp_event_release(dev, ev));
  SP_CHECK_OK(sp_free(dev, block));
  sp_device_close(dev);
}

/* Goal (issue 14 C3, H2, H3, W4): in a fork child, the parent's batcher and model are never
 * used through threads the child does not have: sp_batcher_stats_get and sp_batcher_infer return
 * SP_ERR_FORKED (not stale numbers, not a wait forever), sp_batcher_destroy and sp_model_free only
 * forget (no pthread_join of a missing worker, no sync of a stream with work in flight at fork).
 * Method: the parent runs a batcher pass and a model infer, then holds the model's stream with a
 * gate and queues an infer behind it from another thread (work in flight at fork), and forks. The
 * child makes the calls and exits with the number of the first failed check; the parent waits at
 * most 10 s (a hang kills the child and fails), then opens the gate and checks its own batcher
 * and model still answer correctly before freeing them. */
static atomic_bool infer_gate_open;

static void infer_gate(void *p) {
  (void)p;
  while (!atomic_load(&infer_gate_open)) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

typedef struct infer_arg {
  sp_model *m;
  float in[4], out[4];
  sp_status st;
} infer_arg;

static void *infer_thread(void *p) {
  infer_arg *a = p;
  a->st = sp_model_infer(a->m, a->in, a->out, 1);
  return NULL;
}

static int child_infer_checks(sp_batcher *b, sp_model *m) {
  sp_batcher_stats bs;
  float in[4] = {1, 2, 3, 4}, out[4];
  if (sp_batcher_stats_get(b, &bs) != SP_ERR_FORKED) return 1;
  if (!strstr(sp_last_error(), "fork")) return 2;
  if (sp_batcher_infer(b, in, out) != SP_ERR_FORKED) return 3;
  if (sp_model_infer(m, in, out, 1) != SP_ERR_FORKED) return 4;
  sp_batcher_destroy(b); /* forgets only */
  sp_model_free(m);      /* forgets only, although an infer is in flight on its stream */
  sp_device_close(sp_model_device(m));
  return 0;
}

/* Waits up to 10 s for pid; kills it and returns -1 if it has not exited. */
static int wait_bounded(pid_t pid, int *status) {
  for (int k = 0; k < 1000; k++) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return 0;
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  kill(pid, SIGKILL);
  waitpid(pid, status, 0);
  return -1;
}

static void fork_infer_objects(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(2, SP_STREAMS_ROUND_ROBIN); /* one pool stream: all share it */
  const unsigned dims[] = {4, 8, 4};
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, tu_seed(), SP_F32, &m));
  sp_batcher_config bc = {.max_batch = 4, .workers = 1};
  sp_batcher *b = NULL;
  SP_CHECK_OK(sp_batcher_create(m, &bc, &b));
  float in[4] = {0.5f, -1, 2, 0.25f}, want[4], got[4];
  SP_CHECK_OK(sp_model_infer(m, in, want, 1));
  SP_CHECK_OK(sp_batcher_infer(b, in, got));
  sp_stream *s = NULL;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  atomic_store(&infer_gate_open, false);
  SP_CHECK_OK(sp_launch_host_func(s, infer_gate, NULL));
  infer_arg ia = {.m = m, .in = {0.5f, -1, 2, 0.25f}};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, infer_thread, &ia), 0);
  struct timespec ts = {0, 30000000};
  nanosleep(&ts, NULL); /* the infer is queued behind the gate */
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(child_infer_checks(b, m));
  int status = 0;
  int hung = wait_bounded(pid, &status);
  atomic_store(&infer_gate_open, true);
  pthread_join(t, NULL);
  if (hung) fail_msg("the child hung (killed after 10 s): a call waited for a parent's thread");
  if (WIFSIGNALED(status)) fail_msg("the child died of signal %d", WTERMSIG(status));
  if (!WIFEXITED(status)) fail_msg("child did not exit normally (status 0x%x)", status);
  if (WEXITSTATUS(status)) fail_msg("child check %d failed", WEXITSTATUS(status));
  SP_CHECK_OK(ia.st);
  SP_CHECK_OK(sp_batcher_infer(b, in, got));
  for (int k = 0; k < 4; k++) {
    if (got[k] != want[k]) fail_msg("batcher row %d: %g, expected %g", k, got[k], want[k]);
    if (ia.out[k] != want[k]) fail_msg("infer row %d: %g, expected %g", k, ia.out[k], want[k]);
  }
  sp_batcher_destroy(b);
  sp_model_free(m);
  sp_device_close(dev);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {cmocka_unit_test(fork_child),
                                     cmocka_unit_test(fork_infer_objects)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
