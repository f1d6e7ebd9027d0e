/* The fault injector itself (tests/common/internal/tu_backend_faults.h, tu_host_faults.h).
 *
 * Goal: sp__backend_override routes sp_device_open (by name and by "auto") through the wrapping
 * table and rejects bad tables; the wrapper keeps every optional slot the real table lacks NULL;
 * an armed slot fails exactly at call N (one-shot) or from call N on (persistent) with its
 * documented status and a message naming it, and not once disarmed; the live-object counters
 * follow creation and destruction; the host allocator fails the Nth allocation of at least
 * min_bytes and counts live blocks.
 * Method: drive the wrapped table directly (device, mem_alloc/mem_free) and through the public
 * API, comparing call and hit counts with the numbers expected; print both on a mismatch.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "testutil.h"
#include "tu_backend_faults.h"
#include "tu_host_faults.h"

static void test_override_routes_open(void **state) {
  (void)state;
  SP_CHECK_OK(tu_fault_install("host"));
  const char *names[] = {"host", NULL};
  for (int i = 0; i < 2; i++) {
    if (!names[i] && sp_backend_compiled("cuda")) { /* "auto" picks cuda when it has a device */
      int n = 0;
      if (sp_device_count("cuda", &n) == SP_OK && n > 0) continue;
    }
    sp_device_config cfg = {.backend = names[i], .streams = 2};
    sp_device *dev = NULL;
    tu_fault_arm(TU_SLOT_device_open, 1000, 0); /* counts, never fails here */
    SP_CHECK_OK(sp_device_open(&cfg, &dev));
    if (dev->be != tu_fault_table())
      fail_msg("backend %s: device opened with table %p, wrapper is %p",
               names[i] ? names[i] : "auto", (const void *)dev->be, (const void *)tu_fault_table());
    assert_int_equal(tu_fault_calls(TU_SLOT_device_open), 1);
    assert_int_equal(tu_fault_live_get().devices, 1);
    sp_device_close(dev);
    assert_int_equal(tu_fault_live_get().devices, 0);
  }
  tu_fault_uninstall();
  sp_device *dev = tu_open_host(2, SP_STREAMS_ROUND_ROBIN);
  assert_ptr_equal(dev->be, &sp__host_backend);
  sp_device_close(dev);
}

static void test_override_rejects_bad_tables(void **state) {
  (void)state;
  sp__backend half = sp__host_backend;
  half.host_free_pinned = NULL;
  half.host_alloc_pinned = sp__host_backend.mem_alloc; /* one of a pair: invalid */
  SP_CHECK_STATUS(sp__backend_override(&half), SP_ERR_BACKEND);
  sp__backend other = sp__host_backend;
  other.name = "nosuch";
  SP_CHECK_STATUS(sp__backend_override(&other), SP_ERR_UNSUPPORTED);
  const sp__backend *be = NULL;
  SP_CHECK_OK(sp__backend_find("host", &be));
  assert_ptr_equal(be, &sp__host_backend); /* nothing changed */
  SP_CHECK_OK(sp__backend_override(NULL));
}

static void test_optional_slots_preserved(void **state) {
  (void)state;
  SP_CHECK_OK(tu_fault_install("host"));
  const sp__backend *w = tu_fault_table(), *r = &sp__host_backend;
#define TU_CHECK_SLOT(name, status)                                           \
  if ((w->name != NULL) != (r->name != NULL) ||                               \
      tu_slot_present(TU_SLOT_##name) != (r->name != NULL))                   \
    fail_msg("slot %s: real %s, wrapper %s", #name, r->name ? "set" : "NULL", \
             w->name ? "set" : "NULL");
  TU_FAULT_SLOTS(TU_CHECK_SLOT)
#undef TU_CHECK_SLOT
  SP_CHECK_OK(sp__backend_validate(w));
  tu_fault_uninstall();
}

static void test_countdown_modes(void **state) {
  (void)state;
  SP_CHECK_OK(tu_fault_install("host"));
  const sp__backend *B = tu_fault_table();
  sp__bdevice *d = NULL;
  SP_CHECK_OK(B->device_open(0, &d));
  void *p[8] = {NULL};
  for (int persist = 0; persist < 2; persist++) {
    tu_fault_arm(TU_SLOT_mem_alloc, 2, persist);
    SP_CHECK_OK(B->mem_alloc(d, 100, &p[0]));
    SP_CHECK_OK(B->mem_alloc(d, 100, &p[1]));
    SP_CHECK_STATUS(B->mem_alloc(d, 100, &p[2]), SP_ERR_OUT_OF_MEMORY);
    assert_null(p[2]);
    if (!strstr(sp_last_error(), "injected") || !strstr(sp_last_error(), "mem_alloc"))
      fail_msg("message: %s", sp_last_error());
    if (persist) SP_CHECK_STATUS(B->mem_alloc(d, 100, &p[2]), SP_ERR_OUT_OF_MEMORY);
    else SP_CHECK_OK(B->mem_alloc(d, 100, &p[2]));
    assert_int_equal(tu_fault_hits(), persist ? 2 : 1);
    assert_int_equal(tu_fault_calls(TU_SLOT_mem_alloc), 4);
    assert_int_equal(tu_fault_live_get().segments, persist ? 2 : 3);
    SP_CHECK_OK(B->mem_free(d, p[0])); /* other slots are not affected */
    tu_fault_disarm();
    SP_CHECK_OK(B->mem_alloc(d, 100, &p[3]));
    SP_CHECK_OK(B->mem_free(d, p[1]));
    SP_CHECK_OK(B->mem_free(d, p[2]));
    SP_CHECK_OK(B->mem_free(d, p[3]));
    memset(p, 0, sizeof(p));
    assert_int_equal(tu_fault_live_get().segments, 0);
  }
  /* a free that fails still frees (the failure comes after the real call) */
  SP_CHECK_OK(B->mem_alloc(d, 100, &p[0]));
  tu_fault_arm(TU_SLOT_mem_free, 0, 0);
  SP_CHECK_STATUS(B->mem_free(d, p[0]), SP_ERR_BACKEND);
  assert_int_equal(tu_fault_live_get().segments, 0);
  size_t f = 0, t = 0;
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  if (f != t) fail_msg("after the failed free: free %zu of %zu", f, t);
  B->device_close(d);
  tu_fault_uninstall();
}

static void test_host_memory(void **state) {
  (void)state;
  tu_hostmem_install();
  long live = tu_hostmem_live();
  sp_device *dev = NULL;
  sp_device_config cfg = {.backend = "host", .streams = 2};
  tu_hostmem_arm(0, 0, 0); /* one-shot: the first allocation of the open fails */
  SP_CHECK_STATUS(sp_device_open(&cfg, &dev), SP_ERR_HOST_MEMORY);
  assert_int_equal(tu_hostmem_hits(), 1);
  if (tu_hostmem_live() != live)
    fail_msg("host blocks live after the failed open: %ld, before: %ld", tu_hostmem_live(), live);
  SP_CHECK_OK(sp_device_open(&cfg, &dev)); /* armed one-shot, already spent */
  if (tu_hostmem_calls() < 2) fail_msg("open made %lu counted allocations", tu_hostmem_calls());
  sp_device_close(dev);
  tu_hostmem_arm(0, SIZE_MAX, 1); /* nothing is that large: nothing fails */
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  sp_device_close(dev);
  assert_int_equal(tu_hostmem_hits(), 0);
  tu_hostmem_disarm();
  if (tu_hostmem_live() != live)
    fail_msg("host blocks live: %ld, before: %ld", tu_hostmem_live(), live);
  tu_hostmem_arm(0, 0, 1);
  SP_CHECK_STATUS(sp_device_open(&cfg, &dev), SP_ERR_HOST_MEMORY);
  if (tu_hostmem_hits() != 1)
    fail_msg("persistent: %lu hits, want 1 (open stops at the first)", tu_hostmem_hits());
  tu_hostmem_uninstall();
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  sp_device_close(dev);
}

int main(void) {
  (void)tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_override_routes_open),
      cmocka_unit_test(test_override_rejects_bad_tables),
      cmocka_unit_test(test_optional_slots_preserved),
      cmocka_unit_test(test_countdown_modes),
      cmocka_unit_test(test_host_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
