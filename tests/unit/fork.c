/* Goal: after fork(), every call in the child on a device the parent opened returns
 * SP_ERR_FORKED (and close only forgets it), while a device the child opens itself works; the
 * parent's device is unaffected.
 * Method: the parent opens a device, binds a stream, allocates and acquires an event, then forks.
 * The child checks each call's status and copies a seeded pattern through its own device, and
 * reports the number of the first failed check as its exit status (0: all passed); under TSan,
 * which cannot start threads in a child of a threaded parent, it skips its own device. The parent
 * checks the exit status and then uses its device again.
 */
#include <string.h>
#include <sys/wait.h>
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
  sp_device_close(parent); /* forgets only */
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

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {cmocka_unit_test(fork_child)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
