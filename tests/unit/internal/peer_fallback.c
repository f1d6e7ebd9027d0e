/* Goal: the fallbacks of the cross-device calls, which a pair of real host devices never takes,
 * are correct: a wait between devices of different backends blocks the calling thread until the
 * event completes (host-side), and a peer copy between them is staged through host memory in
 * chunks, after the destination stream's earlier work, with every byte right in both directions
 * and a host-memory failure reported as SP_ERR_HOST_MEMORY.
 * Method (white-box): two host devices; device b is given a copy of the host method table
 * without the memcpy_peer_async slot, so for the core the two devices are of different backends
 * (dev->be differs) while everything else still works. A gate (host function) held by a timer
 * thread makes the event late; a copy of 2 chunks + an odd tail checks chunking; a host
 * allocator that fails on demand checks the staging buffer's failure path.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/device.h"
#include "testutil.h"
#include "tu_host_faults.h"

enum { GATE_MS = 60 };
#define BIG ((size_t)(16u << 20) + 4099u) /* two 8 MiB staging chunks and a tail */

static sp__backend nopeer_backend; /* the host table without the peer slot */

/* a: a plain host device; b: a host device the core sees as another backend. */
static void open_pair(sp_device **a, sp_device **b) {
  *a = tu_open_host_index(0, 4, SP_STREAMS_ROUND_ROBIN);
  *b = tu_open_host_index(1, 4, SP_STREAMS_ROUND_ROBIN);
  nopeer_backend = *(*b)->be;
  nopeer_backend.memcpy_peer_async = NULL;
  (*b)->be = &nopeer_backend;
  assert_int_equal(sp_peer_copy_direct(*b, *a), 0);
  assert_int_equal(sp_peer_copy_direct(*a, *b), 0);
}

static void close_pair(sp_device *a, sp_device *b) {
  b->be = &sp__host_backend;
  sp_device_close(a);
  sp_device_close(b);
}

static void wait_is_host_side(void **state) {
  (void)state;
  sp_device *a, *b;
  open_pair(&a, &b);
  sp_stream *sa = NULL, *sb = NULL;
  SP_CHECK_OK(sp_stream_current(a, &sa));
  SP_CHECK_OK(sp_stream_current(b, &sb));
  tu_gate g;
  tu_gate_init(&g, GATE_MS); /* the timer opens it */
  SP_CHECK_OK(sp_launch_host_func(sa, tu_gate_fn, &g));
  sp_event made;
  SP_CHECK_OK(sp_event_acquire(a, 0, &made));
  SP_CHECK_OK(sp_event_record(made, sa));
  unsigned long long t0 = tu_now_ns();
  SP_CHECK_OK(sp_stream_wait_event_peer(sb, a, made));
  unsigned long long waited = tu_now_ns() - t0;
  SP_CHECK_OK(sp_event_query(a, made)); /* returned only once the event was done */
  if (waited < (unsigned long long)GATE_MS * 1000000ull / 2)
    fail_msg("host-side wait returned after %llu ns, the gate holds %d ms", waited, GATE_MS);
  tu_gate_open(&g);
  SP_CHECK_OK(sp_event_release(a, made));
  close_pair(a, b);
}

/* src on `from` (made on sf behind a gate), staged to dst on st after a memset queued on st. */
static void staged_copy_dir(sp_device *from, sp_device *to, uint64_t seed) {
  sp_stream *sf = NULL, *st = NULL;
  SP_CHECK_OK(sp_stream_current(from, &sf));
  SP_CHECK_OK(sp_stream_current(to, &st));
  unsigned char *host = malloc(BIG), *out = malloc(BIG), *src = NULL, *dst = NULL;
  assert_true(host && out);
  SP_CHECK_OK(sp_alloc(from, BIG, sf, (void **)&src));
  SP_CHECK_OK(sp_alloc(to, BIG, st, (void **)&dst));
  for (size_t i = 0; i < BIG; i++) host[i] = tu_pattern(seed, i);
  tu_gate g = {0}; /* closed; its timer starts below */
  SP_CHECK_OK(sp_launch_host_func(sf, tu_gate_fn, &g));
  SP_CHECK_OK(sp_memcpy_async(sf, src, host, BIG));
  sp_event made;
  SP_CHECK_OK(sp_event_acquire(from, 0, &made));
  SP_CHECK_OK(sp_event_record(made, sf));
  SP_CHECK_OK(sp_memset_async(st, dst, 0xee, BIG)); /* must land before the copy */
  tu_gate_init(&g, GATE_MS);
  SP_CHECK_OK(sp_stream_wait_event_peer(st, from, made));
  SP_CHECK_OK(sp_memcpy_peer_async(st, dst, from, src, BIG));
  SP_CHECK_OK(sp_memcpy_async(st, out, dst, BIG));
  SP_CHECK_OK(sp_stream_sync(st));
  tu_gate_open(&g);
  for (size_t i = 0; i < BIG; i++)
    if (out[i] != tu_pattern(seed, i))
      fail_msg("staged copy byte %zu of %zu: got 0x%02x, want 0x%02x", i, BIG, out[i],
               tu_pattern(seed, i));
  SP_CHECK_OK(sp_event_release(from, made));
  SP_CHECK_OK(sp_free(from, src));
  SP_CHECK_OK(sp_free(to, dst));
  free(host);
  free(out);
}

static void staged_copy_both_directions(void **state) {
  (void)state;
  sp_device *a, *b;
  open_pair(&a, &b);
  staged_copy_dir(a, b, tu_seed());
  staged_copy_dir(b, a, tu_seed() + 1);
  close_pair(a, b);
}

/* ---- host-memory failure of the staging buffer ---------------------------------------------- */

static void staged_copy_host_oom(void **state) {
  (void)state;
  tu_hostmem_install();
  sp_device *a, *b;
  open_pair(&a, &b);
  sp_stream *sb = NULL;
  SP_CHECK_OK(sp_stream_current(b, &sb));
  void *src = NULL, *dst = NULL;
  SP_CHECK_OK(sp_alloc(a, 1 << 20, NULL, &src));
  SP_CHECK_OK(sp_alloc(b, 1 << 20, sb, &dst));
  /* both streams the copy uses exist (they are created on first submission) before the fault */
  SP_CHECK_OK(sp_memset_async(sp_stream_default(a), src, 1, 1 << 20));
  SP_CHECK_OK(sp_memset_async(sb, dst, 0, 1 << 20));
  SP_CHECK_OK(sp_stream_sync(sp_stream_default(a)));
  tu_hostmem_arm(0, 4096, 1); /* host allocations of >= 4 KiB fail */
  SP_CHECK_STATUS(sp_memcpy_peer_async(sb, dst, a, src, 1 << 20), SP_ERR_HOST_MEMORY);
  tu_hostmem_disarm();
  if (!strstr(sp_last_error(), "staging")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(sp_memcpy_peer_async(sb, dst, a, src, 1 << 20));
  SP_CHECK_OK(sp_free(a, src));
  SP_CHECK_OK(sp_free(b, dst));
  close_pair(a, b);
  tu_hostmem_uninstall();
}

int main(void) {
  setenv("STREAMPOOL_HOST_DEVICES", "2", 1);
  (void)tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(wait_is_host_side),
      cmocka_unit_test(staged_copy_both_directions),
      cmocka_unit_test(staged_copy_host_oom),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
