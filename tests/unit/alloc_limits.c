/* Goal (issue 14 W1/U2): under a memory limit, any request whose rounded size fits under the limit
 * succeeds on an empty device (segments are sized to what is left under the limit, not refused for
 * the size class's 2 or 20 MiB rounding), a request that does not fit fails with SP_ERR_LIMIT and a
 * message that names the rounding and the numbers, and a second request fitting in what the first
 * left (same size pool) succeeds too.
 * Method: a grid of limits (512 B .. 25 MiB) x request sizes (1 B .. 15 MiB) on fresh host
 * devices: each pair either fits (rounded <= limit: must succeed, then the reserved bytes must
 * stay within the limit) or not (must fail with SP_ERR_LIMIT, "rounded to 512" in the message);
 * then seeded random pairs of requests (one pool, below 10 MiB) under random limits, where the pair
 * fits by construction, and one 512-byte unit more than is left must be refused.
 */
#include <stdbool.h>
#include <string.h>

#include "testutil.h"

#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)

static size_t round512(size_t n) { return (n + 511) & ~(size_t)511; }

static sp_device *open_limited(size_t limit) {
  sp_device_config cfg = {.backend = "host", .streams = 4, .memory_limit = limit};
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  return dev;
}

static void check_reserved(sp_device *dev, size_t limit, const char *what) {
  sp_memory_stats m;
  SP_CHECK_OK(sp_memory_stats_get(dev, &m));
  if (m.reserved_bytes > limit)
    fail_msg("%s: reserved %zu passes the limit %zu", what, m.reserved_bytes, limit);
}

static void test_grid_on_empty_device(void **state) {
  (void)state;
  static const size_t limits[] = {
      512,     KIB,     100 * KIB, MIB,      MIB + 512,      3 * MIB / 2, 2 * MIB - 512,
      2 * MIB, 3 * MIB, 10 * MIB,  19 * MIB, 20 * MIB - 512, 25 * MIB};
  static const size_t sizes[] = {
      1,           512,     513,          100 * KIB, MIB,          MIB + 1,
      3 * MIB / 2, 5 * MIB, 10 * MIB - 1, 10 * MIB,  12 * MIB + 7, 15 * MIB};
  unsigned fits = 0, refused = 0;
  for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
    sp_device *dev = open_limited(limits[i]);
    for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
      size_t n = sizes[j];
      void *p = NULL;
      sp_status st = sp_alloc(dev, n, NULL, &p);
      if (round512(n) <= limits[i]) {
        if (st != SP_OK)
          fail_msg("limit %zu, request %zu (rounded %zu) fits but got %s: %s", limits[i], n,
                   round512(n), sp_status_str(st), sp_last_error());
        check_reserved(dev, limits[i], "after a fitting request");
        memset(p, 0x5a, n); /* host backend: device memory is host memory */
        SP_CHECK_OK(sp_free(dev, p));
        SP_CHECK_OK(sp_empty_cache(dev)); /* the next request starts on an empty device */
        fits++;
      } else {
        if (st != SP_ERR_LIMIT)
          fail_msg("limit %zu, request %zu (rounded %zu) does not fit but got %s", limits[i], n,
                   round512(n), sp_status_str(st));
        if (!strstr(sp_last_error(), "rounded to 512"))
          fail_msg("limit %zu, request %zu: message \"%s\" does not name the rounding", limits[i],
                   n, sp_last_error());
        refused++;
      }
    }
    sp_device_close(dev);
  }
  print_message("%u fitting pairs allocated, %u refused\n", fits, refused);
}

/* Two requests of one pool below 10 MiB whose rounded sizes together fit: both succeed (above
 * 10 MiB a segment of its own is rounded up to 2 MiB while there is room, which the next request
 * cannot use: the guarantee there is the empty-device one). */
static void test_random_pairs(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() ^ 0x11u};
  for (int trial = 0; trial < 60; trial++) {
    bool small = tu_rng_below(&rng, 2) == 0;
    size_t lo = small ? 1 : MIB + 1, span = small ? MIB : 9 * MIB - 1; /* below 10 MiB */
    size_t a = lo + (size_t)tu_rng_below(&rng, span), b = lo + (size_t)tu_rng_below(&rng, span);
    if (small) {
      a = a > MIB ? MIB : a;
      b = b > MIB ? MIB : b;
    }
    size_t limit = round512(a) + round512(b) + 512 * (size_t)tu_rng_below(&rng, 8);
    sp_device *dev = open_limited(limit);
    void *pa = NULL, *pb = NULL;
    sp_status st = sp_alloc(dev, a, NULL, &pa);
    if (st == SP_OK) st = sp_alloc(dev, b, NULL, &pb);
    if (st != SP_OK)
      fail_msg(
          "trial %d: limit %zu, requests %zu then %zu (rounded %zu + %zu) fit but got %s: "
          "%s",
          trial, limit, a, b, round512(a), round512(b), sp_status_str(st), sp_last_error());
    check_reserved(dev, limit, "after two fitting requests");
    /* One more 512-byte unit than is left must be refused, and the message must add up. */
    size_t left = limit - round512(a) - round512(b);
    void *pc = NULL;
    st = sp_alloc(dev, left + 1, NULL, &pc);
    if (st == SP_OK) {
      sp_memory_stats m;
      SP_CHECK_OK(sp_memory_stats_get(dev, &m));
      fail_msg("trial %d: limit %zu, %zu + %zu live, %zu more accepted (allocated %zu)", trial,
               limit, round512(a), round512(b), left + 1, m.allocated_bytes);
    }
    assert_int_equal(st, SP_ERR_LIMIT);
    SP_CHECK_OK(sp_free(dev, pb));
    SP_CHECK_OK(sp_free(dev, pa));
    sp_device_close(dev);
  }
}

/* The final message names the request, its rounding, what is allocated and reserved, and the room.
 */
static void test_message_adds_up(void **state) {
  (void)state;
  sp_device *dev = open_limited(3 * MIB);
  void *p = NULL, *q = NULL;
  SP_CHECK_OK(sp_alloc(dev, 2 * MIB, NULL, &p));
  SP_CHECK_STATUS(sp_alloc(dev, MIB + 1, NULL, &q), SP_ERR_LIMIT);
  const char *msg = sp_last_error();
  static const char *const want[] = {"requested 1048577 bytes", "rounded to 512: 1049088",
                                     "allocated 2097152",       "reserved 2097152",
                                     "limit 3145728",           "1048576 left"};
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
    if (!strstr(msg, want[i])) fail_msg("message \"%s\" lacks \"%s\"", msg, want[i]);
  SP_CHECK_OK(sp_free(dev, p));
  sp_device_close(dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_grid_on_empty_device),
      cmocka_unit_test(test_random_pairs),
      cmocka_unit_test(test_message_adds_up),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
