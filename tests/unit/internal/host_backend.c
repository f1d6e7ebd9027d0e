/* White-box tests of what is particular to the host backend, through its method table.
 *
 * Goal: the host table is complete and valid; device memory is bounded by STREAMPOOL_HOST_MEMORY
 * with exact OOM (also under threads, and when decommitted pages are committed again); a bf16
 * Linear whose scratch cannot be allocated reports SP_ERR_HOST_MEMORY once; NaNs keep sign and
 * payload through conversion; the table validates its arguments; bad environment values are
 * rejected naming the variable; several host devices work at once. The backend-table contract every
 * backend shares (FIFO order, query/sync/destroy, events, Linear, conversion) is
 * tests/conformance/conf_backend.c, run on the host table too.
 *
 * Method: drive the table directly (no core). Every data check prints expected and actual values.
 * Seeded by tu_seed(); sizes shrink under ThreadSanitizer via tu_scale().
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "tu_backend.h"
#include "tu_host_faults.h"

#include "backend/backend.h"

static const sp__backend *const B = &sp__host_backend;

/* ---- helpers ------------------------------------------------------------------------------- */

static void env_clear(void) {
  unsetenv("STREAMPOOL_HOST_DEVICES");
  unsetenv("STREAMPOOL_HOST_JITTER_US");
  unsetenv("STREAMPOOL_HOST_JITTER_SEED");
  unsetenv("STREAMPOOL_HOST_MEMORY");
}

static int setup(void **state) {
  (void)state;
  env_clear();
  tu_failures_reset();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  env_clear();
  return 0;
}

/* ---- memory --------------------------------------------------------------------------------- */

static void test_memory_capacity(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_MEMORY", "1M", 1);
  sp__bdevice *d = tu_be_device(B, 0);
  size_t free_b = 0, total_b = 0;
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(total_b, 1u << 20);
  assert_int_equal(free_b, 1u << 20);
  void *a = NULL, *b = NULL, *c = NULL;
  SP_CHECK_OK(B->mem_alloc(d, 512 << 10, &a));
  assert_int_equal((uintptr_t)a % 256, 0);
  memset(a, 1, 512 << 10);
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(free_b, 512u << 10);
  SP_CHECK_STATUS(B->mem_alloc(d, (512 << 10) + 1, &b), SP_ERR_OUT_OF_MEMORY);
  assert_null(b);
  if (!strstr(sp_last_error(), "out of memory")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(B->mem_alloc(d, 512 << 10, &b)); /* exactly the rest */
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(free_b, 0);
  SP_CHECK_STATUS(B->mem_alloc(d, 1, &c), SP_ERR_OUT_OF_MEMORY);
  SP_CHECK_OK(B->mem_free(d, a));
  SP_CHECK_OK(B->mem_alloc(d, 1000, &c));
  assert_int_equal((uintptr_t)c % 256, 0);
  SP_CHECK_STATUS(B->mem_alloc(d, 0, &a), SP_ERR_INVALID_ARGUMENT);
  int local = 0;
  SP_CHECK_STATUS(B->mem_free(d, &local), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(B->mem_free(d, NULL));
  SP_CHECK_OK(B->mem_free(d, b));
  SP_CHECK_OK(B->mem_free(d, c));
  SP_CHECK_OK(B->memory_info(d, &free_b, &total_b));
  assert_int_equal(free_b, total_b);
  B->device_close(d);
}

/* Decommitted pages leave the capacity and committing them takes it again, with exact OOM;
 * ranges that are not whole pages of a live segment of the device are refused. */
static void test_memory_pages(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_MEMORY", "8M", 1);
  const size_t page = SP__MEM_PAGE;
  sp__bdevice *d = tu_be_device(B, 0);
  void *seg = NULL, *other = NULL;
  size_t f = 0, t = 0;
  SP_CHECK_OK(B->mem_alloc(d, 3 * page, &seg));
  assert_int_equal((uintptr_t)seg % 4096, 0);
  SP_CHECK_OK(B->mem_decommit(d, seg, 0, 2 * page));
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  assert_int_equal(f, 8 * 1024 * 1024 - page);
  SP_CHECK_OK(B->mem_alloc(d, 2 * page, &other)); /* capacity the pages gave back, less a page */
  SP_CHECK_STATUS(B->mem_commit(d, seg, 0, 2 * page), SP_ERR_OUT_OF_MEMORY);
  if (!strstr(sp_last_error(), "out of memory")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(B->mem_commit(d, seg, 0, page)); /* exactly the rest */
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  assert_int_equal(f, 0);
  SP_CHECK_STATUS(B->mem_commit(d, seg, page / 2, page), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->mem_decommit(d, seg, 0, page + 512), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->mem_decommit(d, seg, 2 * page, 2 * page), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->mem_decommit(d, seg, 0, 0), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->mem_decommit(d, (char *)seg + page, 0, page), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->mem_decommit(d, NULL, 0, page), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(B->mem_free(d, seg)); /* page 1 still decommitted: gives back what it holds */
  SP_CHECK_OK(B->mem_free(d, other));
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  assert_int_equal(f, t);
  B->device_close(d);
}

/* Threads allocate and free against a small capacity: used bytes never pass it, and all come
 * back. */
typedef struct mem_ctx {
  sp__bdevice *d;
  uint64_t seed;
  unsigned iters;
  unsigned long ooms;
} mem_ctx;
static void *mem_worker(void *arg) {
  mem_ctx *c = arg;
  tu_rng r = {c->seed};
  void *held[8] = {NULL};
  for (unsigned i = 0; i < c->iters; i++) {
    unsigned k = (unsigned)tu_rng_below(&r, 8);
    if (held[k]) {
      TU_EXPECT_OK(B->mem_free(c->d, held[k]));
      held[k] = NULL;
    } else {
      sp_status st = B->mem_alloc(c->d, 1 + tu_rng_below(&r, 20000), &held[k]);
      if (st == SP_ERR_OUT_OF_MEMORY) c->ooms++;
      else TU_EXPECT(st == SP_OK, "mem_alloc: %d %s", (int)st, sp_last_error());
      if (held[k]) memset(held[k], 0xab, 1);
    }
    size_t f = 0, t = 0;
    TU_EXPECT_OK(B->memory_info(c->d, &f, &t));
    TU_EXPECT(f <= t, "free %zu > total %zu", f, t);
  }
  for (unsigned k = 0; k < 8; k++) TU_EXPECT_OK(B->mem_free(c->d, held[k]));
  return NULL;
}

static void test_memory_threads(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_MEMORY", "100K", 1);
  sp__bdevice *d = tu_be_device(B, 0);
  mem_ctx c[4];
  pthread_t tid[4];
  for (unsigned i = 0; i < 4; i++) {
    c[i] = (mem_ctx){d, tu_seed() + i, (unsigned)tu_scale(20000), 0};
    pthread_create(&tid[i], NULL, mem_worker, &c[i]);
  }
  unsigned long ooms = 0;
  for (unsigned i = 0; i < 4; i++) {
    pthread_join(tid[i], NULL);
    ooms += c[i].ooms;
  }
  assert_int_equal(tu_failures(), 0);
  if (!ooms) fail_msg("expected some OOMs with 4 threads x 8 blocks of <= 20 KB in 100 KB");
  size_t f = 0, t = 0;
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  if (f != t) fail_msg("after freeing everything: free %zu, total %zu", f, t);
  B->device_close(d);
}

/* ---- linear and convert --------------------------------------------------------------------- */

/* A bf16 Linear whose scratch cannot be allocated reports SP_ERR_HOST_MEMORY at the next sync,
 * once. The scratch comes through the host-allocation hook, which this test makes fail
 * (tests/common/tu_host_faults.h). */
static void test_linear_async_error(void **state) {
  (void)state;
  tu_hostmem_install();
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  enum { IN = 1024, OUT = 512 };
  uint16_t *x = calloc(IN, 2), *w = calloc((size_t)IN * OUT, 2), *y = calloc(OUT, 2);
  sp__linear op = {SP_BF16, 1, IN, OUT, x, w, NULL, y, SP__ACT_NONE, 0};
  tu_hostmem_arm(0, (1u << 20) + 1, 1); /* host allocations over 1 MiB fail */
  SP_CHECK_OK(B->linear_async(s, &op));
  SP_CHECK_STATUS(B->stream_sync(s), SP_ERR_HOST_MEMORY);
  if (!strstr(sp_last_error(), "scratch")) fail_msg("message: %s", sp_last_error());
  SP_CHECK_OK(B->stream_sync(s)); /* reported once */
  tu_hostmem_disarm();
  SP_CHECK_OK(B->linear_async(s, &op));
  SP_CHECK_OK(B->stream_sync(s));
  B->stream_destroy(s);
  B->device_close(d);
  tu_hostmem_uninstall();
  free(x), free(w), free(y);
}

/* A NaN keeps its sign and top payload bits and becomes quiet (host.h's rule; other backends may
 * canonicalize NaNs, see conf_backend.c). */
static void test_convert_nan(void **state) {
  (void)state;
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  const uint32_t in[] = {0x7fc00001u, 0x7f800001u, 0xffc00000u, 0xff812345u};
  const uint16_t want[] = {0x7fc0, 0x7fc0, 0xffc0, 0xffc1};
  enum { N = sizeof(in) / sizeof(in[0]) };
  float f[N];
  uint16_t h[N], all[2] = {0x7f81, 0xffc3};
  float back[2];
  memcpy(f, in, sizeof(f));
  SP_CHECK_OK(B->convert_async(s, h, SP_BF16, f, SP_F32, N));
  SP_CHECK_OK(B->convert_async(s, back, SP_F32, all, SP_BF16, 2));
  SP_CHECK_OK(B->stream_sync(s));
  for (unsigned i = 0; i < N; i++)
    if (h[i] != want[i])
      fail_msg("f32 0x%08x -> bf16: expected 0x%04x, got 0x%04x", in[i], want[i], h[i]);
  for (unsigned i = 0; i < 2; i++) {
    uint32_t u;
    memcpy(&u, &back[i], 4);
    if (u != (uint32_t)all[i] << 16)
      fail_msg("bf16 0x%04x -> f32: expected 0x%08x, got 0x%08x", all[i], (uint32_t)all[i] << 16,
               u);
  }
  B->stream_destroy(s);
  B->device_close(d);
}

/* The host table validates its arguments (the core validates at the API boundary; the CUDA table
 * does not repeat it): zero-byte copies are no-ops, bad arguments fail and queue nothing. */
static void test_bad_arguments(void **state) {
  (void)state;
  sp__bdevice *d = tu_be_device(B, 0);
  sp__bstream *s = tu_be_stream(B, d, 1);
  int v4 = 0;
  SP_CHECK_OK(B->memcpy_async(s, NULL, NULL, 0));
  SP_CHECK_STATUS(B->memcpy_async(s, NULL, &v4, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->memset_async(s, NULL, 0, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->host_func(s, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->stream_sync(NULL), SP_ERR_INVALID_ARGUMENT);
  sp__bevent *e = NULL;
  SP_CHECK_STATUS(B->event_create(d, 0x80, &e), SP_ERR_INVALID_ARGUMENT);
  assert_null(e);
  float v = 0, f4[4] = {0};
  uint16_t h4[4];
  sp__linear bad = {SP_F32, 0, 1, 1, &v, &v, NULL, &v, SP__ACT_NONE, 0};
  SP_CHECK_STATUS(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  bad.batch = 1;
  bad.x = NULL;
  SP_CHECK_STATUS(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  bad.x = &v;
  bad.dtype = (sp_dtype)7;
  SP_CHECK_STATUS(B->linear_async(s, &bad), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->linear_async(s, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->convert_async(s, NULL, SP_BF16, f4, SP_F32, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(B->convert_async(s, h4, (sp_dtype)9, f4, SP_F32, 4), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_OK(B->stream_query(s)); /* nothing was queued */
  B->stream_destroy(s);
  B->device_close(d);
}

/* ---- environment and several devices ------------------------------------------------------- */

static void expect_env_rejected(const char *var, const char *value, int at_count) {
  setenv(var, value, 1);
  int count = -1;
  sp__bdevice *d = NULL;
  sp_status st = at_count ? B->device_count(&count) : B->device_open(0, &d);
  if (st != SP_ERR_INVALID_ARGUMENT || !strstr(sp_last_error(), var))
    fail_msg("%s=\"%s\": expected SP_ERR_INVALID_ARGUMENT naming it, got %d: %s", var, value,
             (int)st, sp_last_error());
  assert_int_equal(count, -1);
  assert_null(d);
  unsetenv(var);
}

static void test_env_values(void **state) {
  (void)state;
  const char *bad_devices[] = {"0", "17", "abc", "2x", "-1", " 2", "99999999999999999999999"};
  for (unsigned i = 0; i < sizeof(bad_devices) / sizeof(*bad_devices); i++) {
    expect_env_rejected("STREAMPOOL_HOST_DEVICES", bad_devices[i], 1);
    expect_env_rejected("STREAMPOOL_HOST_DEVICES", bad_devices[i], 0);
  }
  const char *bad_jitter[] = {"-1", "abc", "2000000", "5us", "1.5"};
  for (unsigned i = 0; i < sizeof(bad_jitter) / sizeof(*bad_jitter); i++)
    expect_env_rejected("STREAMPOOL_HOST_JITTER_US", bad_jitter[i], 0);
  expect_env_rejected("STREAMPOOL_HOST_JITTER_SEED", "x", 0);
  expect_env_rejected("STREAMPOOL_HOST_JITTER_SEED", "-3", 0);
  const char *bad_mem[] = {"0", "12Q", "1.5G", "G", "-1G", "99999999999T", "4KX"};
  for (unsigned i = 0; i < sizeof(bad_mem) / sizeof(*bad_mem); i++)
    expect_env_rejected("STREAMPOOL_HOST_MEMORY", bad_mem[i], 0);
  struct {
    const char *text;
    size_t bytes;
  } good_mem[] = {{"4096", 4096},
                  {"4K", 4096},
                  {"4k", 4096},
                  {"3M", 3u << 20},
                  {"2G", (size_t)2 << 30},
                  {"2GiB", (size_t)2 << 30},
                  {"5KB", 5120}};
  for (unsigned i = 0; i < sizeof(good_mem) / sizeof(*good_mem); i++) {
    setenv("STREAMPOOL_HOST_MEMORY", good_mem[i].text, 1);
    sp__bdevice *d = tu_be_device(B, 0);
    size_t f = 0, t = 0;
    SP_CHECK_OK(B->memory_info(d, &f, &t));
    if (t != good_mem[i].bytes)
      fail_msg("STREAMPOOL_HOST_MEMORY=%s: expected %zu, got %zu", good_mem[i].text,
               good_mem[i].bytes, t);
    B->device_close(d);
  }
  expect_env_rejected("STREAMPOOL_HOST_MEMORY", "", 0); /* empty: an error, as for every variable */
  sp__bdevice *d = tu_be_device(B, 0);                  /* unset: the default (physical RAM) */
  size_t f = 0, t = 0;
  SP_CHECK_OK(B->memory_info(d, &f, &t));
  assert_true(t > ((size_t)64 << 20));
  const char *name = B->device_name(d);
  if (!name || strncmp(name, "host (", 6) != 0) fail_msg("device name: %s", name ? name : "NULL");
  B->device_close(d);
  int count = 0;
  SP_CHECK_OK(B->device_count(&count));
  assert_int_equal(count, 1);
  SP_CHECK_STATUS(B->device_open(1, &d), SP_ERR_NO_DEVICE);
  SP_CHECK_STATUS(B->device_open(-1, &d), SP_ERR_NO_DEVICE);
}

/* Three host devices at once: separate capacities, streams, and a cross-device event wait. */
static void test_several_devices(void **state) {
  (void)state;
  setenv("STREAMPOOL_HOST_DEVICES", "3", 1);
  setenv("STREAMPOOL_HOST_MEMORY", "64K", 1);
  setenv("STREAMPOOL_HOST_JITTER_US", "30", 1);
  int count = 0;
  SP_CHECK_OK(B->device_count(&count));
  assert_int_equal(count, 3);
  sp__bdevice *d[3];
  sp__bstream *s[3];
  void *mem[3];
  for (int i = 0; i < 3; i++) {
    d[i] = tu_be_device(B, i);
    s[i] = tu_be_stream(B, d[i], 1);
    SP_CHECK_OK(B->mem_alloc(d[i], 60 << 10, &mem[i])); /* each has its own 64 KB */
  }
  sp__bdevice *none = NULL;
  SP_CHECK_STATUS(B->device_open(3, &none), SP_ERR_NO_DEVICE);
  SP_CHECK_STATUS(B->mem_free(d[1], mem[0]), SP_ERR_INVALID_ARGUMENT); /* wrong device */
  /* chain: device 0 fills, device 1 copies after an event, device 2 copies after another */
  sp__bevent *e0 = tu_be_event(B, d[0], 0), *e1 = tu_be_event(B, d[1], SP_EVENT_TIMING);
  unsigned char *out = calloc(1, 4096);
  for (unsigned round = 1; round <= (unsigned)tu_scale(50); round++) {
    SP_CHECK_OK(B->memset_async(s[0], mem[0], (int)round, 4096));
    SP_CHECK_OK(B->event_record(e0, s[0]));
    SP_CHECK_OK(B->stream_wait_event(s[1], e0));
    SP_CHECK_OK(B->memcpy_async(s[1], mem[1], mem[0], 4096));
    SP_CHECK_OK(B->event_record(e1, s[1]));
    SP_CHECK_OK(B->stream_wait_event(s[2], e1));
    SP_CHECK_OK(B->memcpy_async(s[2], out, mem[1], 4096));
    SP_CHECK_OK(B->stream_sync(s[2]));
    for (unsigned i = 0; i < 4096; i++)
      if (out[i] != (unsigned char)round)
        fail_msg("round %u byte %u: expected %u, got %u", round, i, round, out[i]);
  }
  for (int i = 0; i < 3; i++) SP_CHECK_OK(B->stream_sync(s[i]));
  B->event_destroy(e0);
  B->event_destroy(e1);
  for (int i = 0; i < 3; i++) {
    SP_CHECK_OK(B->mem_free(d[i], mem[i]));
    B->stream_destroy(s[i]);
    B->device_close(d[i]);
  }
  free(out);
}

/* The table fills every slot and passes the core's validation. */
static void test_table(void **state) {
  (void)state;
  assert_int_equal(B->version, SP__BACKEND_VERSION);
  assert_string_equal(B->name, "host");
  assert_non_null(B->linear_async);
  assert_non_null(B->convert_async);
  assert_non_null(B->event_elapsed_ms);
  SP_CHECK_OK(sp__backend_validate(B));
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_table, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_capacity, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_pages, setup, teardown),
      cmocka_unit_test_setup_teardown(test_linear_async_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_convert_nan, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_env_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_several_devices, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
