/* Goal (issue 14 C2): after 2^32 acquire/release cycles of one event slot its 32-bit generation
 * would come back to a value an old handle carries; the slot is retired instead, so an old
 * handle is never accepted again and the slot is never handed out again.
 * Method (white-box): acquire an event (handle h0, the slot's first generation g0) and release
 * it; acquire again (same slot from the thread cache, generation g0 + 1) and force that live
 * event's generation to g0 - 1, as if 2^32 - 2 more cycles had run; release it (the next
 * generation would be g0). Then acquire a few more events: none may be that slot, and h0 must be
 * SP_ERR_INVALID_HANDLE on query, record, sync and release. Before the fix the slot came back
 * with generation g0 and h0 acted on the new event. A control checks that a forced generation
 * away from the wrap is recycled as usual.
 */
#include <string.h>

#include "core/device.h"
#include "testutil.h"

static uint32_t gen_of(sp_event ev) { return (uint32_t)(ev.id >> 32); }
static uint32_t slot_of(sp_event ev) { return (uint32_t)ev.id; }

static void wrapped_slot_is_retired(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_stream *s0 = sp_stream_default(dev);
  sp_event h0, h1, hw;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &h0));
  SP_CHECK_OK(sp_event_release(dev, h0));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &h1));
  assert_int_equal(slot_of(h1), slot_of(h0));
  assert_int_equal(gen_of(h1), gen_of(h0) + 1u);
  SP_CHECK_OK(sp__event_force_generation(dev, h1, gen_of(h0) - 1u, &hw));
  SP_CHECK_STATUS(sp_event_query(dev, h1), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_event_query(dev, hw));
  SP_CHECK_OK(sp_event_release(dev, hw)); /* the next generation is g0: retired */
  sp_event next[64];
  for (int k = 0; k < 64; k++) {
    SP_CHECK_OK(sp_event_acquire(dev, 0, &next[k]));
    if (slot_of(next[k]) == slot_of(h0))
      fail_msg("acquire %d handed out the wrapped slot %u again (handle 0x%llx, old 0x%llx)", k,
               slot_of(h0), (unsigned long long)next[k].id, (unsigned long long)h0.id);
  }
  SP_CHECK_STATUS(sp_event_query(dev, h0), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_record(h0, s0), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_sync(dev, h0), SP_ERR_INVALID_HANDLE);
  SP_CHECK_STATUS(sp_event_release(dev, h0), SP_ERR_INVALID_HANDLE);
  for (int k = 0; k < 64; k++) SP_CHECK_OK(sp_event_release(dev, next[k]));
  sp_device_close(dev);
}

static void forced_generation_recycles(void **state) {
  (void)state;
  sp_device *dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  sp_event h0, hf, h2;
  SP_CHECK_OK(sp_event_acquire(dev, 0, &h0));
  SP_CHECK_OK(sp__event_force_generation(dev, h0, gen_of(h0) + 1000u, &hf));
  SP_CHECK_OK(sp_event_release(dev, hf));
  SP_CHECK_OK(sp_event_acquire(dev, 0, &h2));
  assert_int_equal(slot_of(h2), slot_of(h0));
  assert_int_equal(gen_of(h2), gen_of(h0) + 1001u);
  SP_CHECK_STATUS(sp_event_query(dev, hf), SP_ERR_INVALID_HANDLE);
  SP_CHECK_OK(sp_event_release(dev, h2));
  sp_device_close(dev);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {cmocka_unit_test(wrapped_slot_is_retired),
                                     cmocka_unit_test(forced_generation_recycles)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
